"""HTTP front ends besides Slack: the API for CI under /v1/ and GitHub webhooks."""
