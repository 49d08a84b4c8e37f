"""The Slack front end: Bolt app, Block Kit rendering, progress threads, approvals, Home."""
