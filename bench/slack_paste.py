"""How much large pasted manifests delay other people: `whoami` answer times while `lint`
pastes are being checked, next to `whoami` alone, against a running bot (HTTP mode).

    .venv/bin/python bench/slack_paste.py [--pastes 8] [--size 40000] [--probes 40]

The bot runs as its own process against the fake Slack workspace on loopback. First
`--probes` `whoami` commands alone (one every 50 ms), then the same while `--pastes` lint
commands of about `--size` characters each arrive at once. Printed: the pastes' ack times and
the probes' ack and answer (response_url) times. Target: the pastes' acks and the probes'
answers stay in tens of milliseconds, not seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.slack_ack import SECRET, free_port, percentile, wait_healthy  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.fakes.slack_requests import encode_form, sign, slash_command  # noqa: E402

UNIT = "  - name: u{i}\n    description: unit number {i}\n    ports:\n      - default->8080/http\n"


def manifest(size: int) -> str:
    text, i = "units:\n", 0
    while len(text) < size:
        text += UNIT.format(i=i)
        i += 1
    return text


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pastes", type=int, default=8)
    parser.add_argument("--size", type=int, default=40_000, help="characters per paste")
    parser.add_argument("--probes", type=int, default=40)
    args = parser.parse_args()

    async with FakeSlack(rate_limits={"chat.postMessage": (10**6, 1.0)}) as fake:
        work = Path(tempfile.mkdtemp(prefix="nelson-bench-"))
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))},
            "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.base_url,
            "NELSON_DATABASE_URL": f"sqlite:///{work / 'nelson.db'}",
            "PYTHONPATH": str(ROOT),
        }
        cmd = [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        log = open(work / "nelson.log", "wb")  # noqa: SIM115 - lives as long as the server
        process = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, process)
            async with aiohttp.ClientSession() as session:

                async def command(text: str, user: str = "U1") -> tuple[float, float]:
                    """(ack ms, answer ms) of one slash command."""
                    response_url = fake.new_response_url()
                    rid = response_url.rsplit("/", 1)[1]
                    body = encode_form(slash_command(text, response_url=response_url, user_id=user))
                    headers = {
                        **sign(SECRET, body),
                        "Content-Type": "application/x-www-form-urlencoded",
                    }
                    started = time.perf_counter()
                    async with session.post(f"{url}/slack/events", data=body, headers=headers) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    acked = time.perf_counter()
                    while not fake.responses.get(rid):
                        await asyncio.sleep(0.002)
                    answered = time.perf_counter()
                    return (acked - started) * 1000, (answered - started) * 1000

                async def probes() -> list[tuple[float, float]]:
                    results = []
                    for _ in range(args.probes):
                        results.append(await command("whoami", "U2"))
                        await asyncio.sleep(0.05)
                    return results

                for _ in range(5):  # warm up: auth.test, imports, connections
                    await command("whoami", "U2")
                alone = await probes()
                paste = f"lint\n```\n{manifest(args.size)}\n```"
                pastes = [asyncio.create_task(command(paste)) for _ in range(args.pastes)]
                busy = await probes()
                pasted = await asyncio.gather(*pastes)

            def show(name: str, values: list[float]) -> None:
                print(
                    f"  {name:28s} p50 {percentile(values, 50):7.1f} ms  "
                    f"p99 {percentile(values, 99):7.1f} ms  max {max(values):7.1f} ms"
                )

            print(
                f"{args.pastes} lint pastes of {args.size:,} characters, "
                f"{args.probes} whoami probes"
            )
            show("whoami ack, alone", [a for a, _ in alone])
            show("whoami answer, alone", [b for _, b in alone])
            show("whoami ack, during pastes", [a for a, _ in busy])
            show("whoami answer, during pastes", [b for _, b in busy])
            show("paste ack", [a for a, _ in pasted])
            show("paste answer", [b for _, b in pasted])
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
