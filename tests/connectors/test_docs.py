"""docs/connectors.md lists every mapped event type of every built-in connector, generated from the
connectors' own tables: this fails when the documentation is stale."""

from __future__ import annotations

from tributary.connectors.doc import DOC_PATH, END, START, main, render_event_tables, rewrite
from tributary.connectors.registry import BUILTIN_CONNECTORS, build_registry


def test_the_generated_section_of_docs_connectors_md_is_current() -> None:
    text = DOC_PATH.read_text()
    assert START in text and END in text
    assert rewrite(text) == text, "docs/connectors.md is stale: run `python -m tributary.connectors.doc`"
    assert main(["--check"]) == 0


def test_every_mapped_event_type_of_every_builtin_is_listed() -> None:
    rendered = render_event_tables()
    registry = build_registry(modules=(), disabled=(), entry_points=False)
    for name in BUILTIN_CONNECTORS:
        assert f"#### `{name}`" in rendered
        for event_type in registry.get(name).event_types:
            assert f"| `{event_type}` |" in rendered, (name, event_type)


def test_a_stale_section_is_replaced_and_a_missing_one_appended() -> None:
    stale = f"intro\n{START}\n| `old.event` | gone |\n{END}\noutro\n"
    fresh = rewrite(stale)
    assert "old.event" not in fresh and fresh.startswith("intro\n") and fresh.endswith("outro\n")
    assert rewrite("intro\n").startswith("intro\n\n" + START)
