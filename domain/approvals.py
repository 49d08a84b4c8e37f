"""The vocabulary of approvals: what is asked, how a request ends, and how one person votes.

String enums, so the values stored in the database and shown in messages are these very
strings; a value read back that is not one of them fails loudly instead of matching nothing.
"""

from __future__ import annotations

from enum import StrEnum


class ApprovalKind(StrEnum):
    TRAFFIC_SHIFT = "traffic-shift"  # approving it starts the shift
    ROLLBACK = "rollback"  # approving it moves traffic back to the earlier stack


class ApprovalStatus(StrEnum):
    PENDING = "pending"  # waiting for votes
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"  # its deadline passed first
    SUPERSEDED = "superseded"  # a newer request for the same route replaced it
    VOID = "void"  # what it asked for no longer makes sense (the stack went away)


class Decision(StrEnum):
    """One person's vote on an approval."""

    APPROVE = "approve"
    REJECT = "reject"
