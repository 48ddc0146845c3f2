"""Renders the docstrings of ``temporal_state``'s public names into the package README.

The section between ``<!-- api:begin -->`` and ``<!-- api:end -->`` of client-sdk/python/README.md
is this script's output, so what PyPI shows is what ``help()`` shows. Run by
scripts/generate-clients.sh:

    python readme_api.py README SRC           rewrite the section
    python readme_api.py README SRC --check   exit 1 when the section is stale

Every name in ``__all__`` must have a docstring (and so must the public methods of classes):
a missing one fails both modes.
"""

from __future__ import annotations

import inspect
import pathlib
import re
import sys

BEGIN = "<!-- api:begin (rendered from the docstrings by scripts/generate-clients.sh) -->"
END = "<!-- api:end -->"


class _Raw:
    """An annotation as written in the source (the package uses postponed annotations)."""

    def __init__(self, text: object) -> None:
        self.text = text if isinstance(text, str) else inspect.formatannotation(text)

    def __repr__(self) -> str:
        return self.text


def _signature(name: str, obj: object) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    empty = inspect.Signature.empty
    params = [p.replace(annotation=p.annotation if p.annotation is empty else _Raw(p.annotation))
              for p in sig.parameters.values()]
    ret = sig.return_annotation
    if inspect.isclass(obj) or ret is empty:
        ret = empty
    else:
        ret = _Raw(ret)
    return f"{name}{sig.replace(parameters=params, return_annotation=ret)}"


def _markdown(doc: str) -> str:
    """reST roles (:class:`Client`) as Markdown code; the rest reads as it is."""
    return re.sub(r":(?:class|func|mod|meth|attr):`([^`]+)`", r"`\1`", doc)


def render(package) -> str:
    missing = []
    out = [BEGIN, "", "## API", ""]
    doc = inspect.getdoc(package)
    if not doc:
        missing.append(package.__name__)
    for name in package.__all__:
        obj = getattr(package, name)
        doc = inspect.getdoc(obj)
        if not doc:
            missing.append(name)
            continue
        kind = "class" if inspect.isclass(obj) else "def"
        out += [f"### `{kind} {_signature(name, obj)}`", "", _markdown(doc), ""]
        if inspect.isclass(obj):
            for meth_name, meth in inspect.getmembers(obj, inspect.isfunction):
                if meth_name.startswith("_"):
                    continue
                meth_doc = inspect.getdoc(meth)
                if not meth_doc:
                    missing.append(f"{name}.{meth_name}")
                    continue
                out += [f"#### `{name}.{_signature(meth_name, meth)}`", "", _markdown(meth_doc), ""]
    if missing:
        sys.exit(f"readme_api: no docstring on: {', '.join(missing)}")
    out.append(END)
    return "\n".join(out)


def main() -> int:
    readme, src = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    check = "--check" in sys.argv[3:]
    sys.path.insert(0, str(src))
    import temporal_state

    text = readme.read_text()
    section = render(temporal_state)
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        updated = before + section + after
    else:
        # First run: the section goes before "## License" (or at the end).
        marker = "\n## License"
        head, sep, tail = text.partition(marker)
        updated = head.rstrip("\n") + "\n\n" + section + "\n" + (sep + tail if sep else "")
    if updated == text:
        return 0
    if check:
        print(f"readme_api: the API section of {readme} is stale", file=sys.stderr)
        return 1
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
