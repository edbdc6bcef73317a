"""The API reference in Markdown, rendered from the app's OpenAPI document (`/openapi.json`).

`docs/api.md` is this module's output, regenerated with one command whenever a route or a schema
changes: `python -m tributary.app.apidoc > docs/api.md` (or `tributary openapi --markdown > docs/api.md`).
A test fails when the file is stale.
"""

from __future__ import annotations

from typing import Any

REGENERATE = "python -m tributary.app.apidoc > docs/api.md"


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {_type(extra)}" if isinstance(extra, dict) and extra else "object"
    fmt = f" ({schema['format']})" if "format" in schema else ""
    return f"{kind}{fmt}"


def _constraints(schema: dict[str, Any]) -> str:
    names = {
        "minLength": "min length",
        "maxLength": "max length",
        "minimum": "min",
        "maximum": "max",
        "pattern": "pattern",
        "minItems": "min items",
        "maxItems": "max items",
        "default": "default",
    }
    parts = [f"{label} `{schema[key]}`" for key, label in names.items() if key in schema]
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", op.get("summary", ""), ""]
    if op.get("description"):
        lines += [op["description"], ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | required | description |", "|---|---|---|---|"]
        for p in params:
            detail = _cell(p.get("description", "") + " " + _constraints(p.get("schema", {})))
            lines.append(f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | {detail} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        shown = _type(schema) if schema else "raw JSON body"
        lines += [
            f"Body: {shown}" + (f". {_cell(body['description'])}" if body.get("description") else ""),
            "",
        ]
    lines += ["| status | meaning |", "|---|---|"]
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {}).get("application/json", {}).get("schema")
        shape = f" ({_type(content)})" if content else ""
        lines.append(f"| {status} | {_cell(response.get('description', ''))}{shape} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    props = schema.get("properties", {})
    if not props:
        return [*lines, f"Type: {_type(schema)}", ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, sub in props.items():
        notes = _cell(" ".join(x for x in (sub.get("description", ""), _constraints(sub)) if x))
        lines.append(f"| `{field}` | {_type(sub)} | {'yes' if field in required else 'no'} | {notes} |")
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    info = document["info"]
    lines = [
        f"# {info['title']} HTTP API",
        "",
        f"Generated from `/openapi.json`; do not edit by hand. Regenerate with `{REGENERATE}`.",
        "",
        info.get("description", ""),
        "",
        "Authentication: `Authorization: Bearer <API key>`. Scopes: `ingest` (identify, ping), `read`, "
        "`admin` (everything). A key bound to a project sees and changes only that project; projects, "
        "account-wide keys and people known to several projects need an account-wide admin key. "
        'Every error is JSON: `{"error": {"code", "message", "details"}}`.',
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op.get("tags", ["other"])[0], []).append((path, method, op))
    for tag in sorted(by_tag):
        lines += [f"## {tag}", ""]
        for path, method, op in by_tag[tag]:
            lines += _operation(path, method, op)
    lines += ["## Schemas", ""]
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def markdown() -> str:
    """The reference of the app as installed, with a configuration that touches no data."""
    import tempfile

    from tributary.app import create_app
    from tributary.app.openapi import build_document

    with tempfile.TemporaryDirectory() as home:
        app = create_app(
            {"TRIBUTARY_HOME": home, "TRIBUTARY_SECRET_KEY": "unused", "DATABASE_URL": "sqlite://"}
        )
        return render(build_document(app))


if __name__ == "__main__":
    print(markdown(), end="")
