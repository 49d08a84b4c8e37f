from bot.terminal import render
from commands.replies import Code, Fields, Reply, Table, Text


def test_renders_tables_aligned_with_truncation_count() -> None:
    reply = Reply(
        title="Stacks (3)",
        blocks=(
            Table(("stack", "status"), (("a--1-0-0--x", "ready"), ("bb", "pending")), total=3),
        ),
    )
    out = render(reply, width=80).splitlines()
    assert out[0] == "Stacks (3)"
    assert out[2] == "STACK        STATUS"
    assert out[3] == "a--1-0-0--x  ready"
    assert out[4] == "bb           pending"
    assert out[5] == "… showing 2 of 3"


def test_narrow_terminal_clips_the_widest_column() -> None:
    reply = Reply(title="t", blocks=(Table(("k", "v"), (("x", "y" * 200),)),))
    lines = render(reply, width=40).splitlines()
    assert max(len(line) for line in lines) <= 40
    assert lines[-1].endswith("…")


def test_markup_is_plain_in_the_terminal() -> None:
    reply = Reply(
        title="*Bold* title",
        blocks=(Text("use `help`"), Fields((("unit", "howdy"),)), Code("a: 1\nb: 2")),
    )
    assert render(reply, width=80) == "Bold title\n\nuse help\n\nunit  howdy\n\n  a: 1\n  b: 2"
