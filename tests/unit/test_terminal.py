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


def test_narrow_terminal_wraps_the_last_column_and_clips_the_others() -> None:
    reply = Reply(title="t", blocks=(Table(("k", "v"), (("x", "y" * 200),)),))
    lines = render(reply, width=40).splitlines()
    assert max(len(line) for line in lines) <= 40
    assert "".join(line.strip() for line in lines[3:]) == "x  " + "y" * 200  # nothing is cut
    message = "traffic: first stack of howdy-http 1.x in local/dev: it gets all traffic at "
    reply = Reply(
        title="t",
        blocks=(Table(("stack", "message"), (("s" * 30, message + "127.0.0.1:20000"),)),),
    )
    lines = render(reply, width=60).splitlines()
    assert max(len(line) for line in lines) <= 60
    assert "127.0.0.1:20000" in lines[-1]  # an address is never split
    assert lines[-1].startswith(" " * 32)  # continuation lines stay in their column
    wide = Reply(title="t", blocks=(Table(("a", "b", "c"), (("x" * 50, "y" * 50, "z"),)),))
    first = render(wide, width=40).splitlines()[3]
    assert "…" in first  # columns before the last are still clipped to fit


def test_markup_is_plain_in_the_terminal() -> None:
    reply = Reply(
        title="*Bold* title",
        blocks=(Text("use `help`"), Fields((("unit", "howdy"),)), Code("a: 1\nb: 2")),
    )
    assert render(reply, width=80) == "Bold title\n\nuse help\n\nunit  howdy\n\n  a: 1\n  b: 2"
