"""sbrun.messages.one_line: how an exception's text ends sbrun's one-line messages."""
from sbrun.messages import one_line


def test_the_first_non_blank_lines_joined_with_whitespace_collapsed():
    err = ValueError("\n  Could not   load 'x'\n\n\tAvailable options:\n\ta\n")
    assert one_line(err) == "Could not load 'x'"
    assert one_line(err, lines=2) == "Could not load 'x' Available options:"
    assert one_line(err, lines=None) == "Could not load 'x' Available options: a"


def test_a_long_text_is_cut_to_the_limit_and_marked():
    text = one_line(RuntimeError("x" * 300), limit=120)
    assert len(text) == 120 and text.endswith("...") and text[:117] == "x" * 117
    assert one_line(RuntimeError("short"), limit=120) == "short"


def test_an_exception_without_text_is_named_by_its_type():
    assert one_line(KeyError()) == "KeyError"
    assert one_line(OSError("  \n ")) == "OSError"
