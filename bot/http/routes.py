"""The CI routes on the bot's HTTP server: the API under /v1/ and GitHub's webhooks."""

from __future__ import annotations

from aiohttp import web

from bot.bootstrap import Application
from bot.http.api import Api, problems_middleware
from bot.http.github import GitHubWebhooks


def add_ci_routes(app: web.Application, application: Application) -> GitHubWebhooks:
    """Add the routes to `app` (before it starts). GitHub deployments an earlier run left
    unreported are followed again when it starts, and no longer when it is cleaned up."""
    api = Api(application)
    api.add_routes(app)
    hooks = GitHubWebhooks(application, api)
    hooks.add_routes(app)
    app.middlewares.append(problems_middleware)

    async def resume_following(_app: web.Application) -> None:
        await hooks.resume()

    async def stop_following(_app: web.Application) -> None:
        await hooks.close()

    app.on_startup.append(resume_following)
    app.on_cleanup.append(stop_following)
    return hooks
