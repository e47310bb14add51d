"""What each field of a config dataclass is: type, default, help text and allowed values.

The help text is the comment the field is documented with in the class source, written
either after it (continued on lines indented under that comment) or on the lines just above
it::

    lr: float = 1e-4               # Adam. Reference 1e-6 over 100 epochs; our default
                                   # budget is a few hundred steps
    # Pairwise divergence D: "kl", "hellinger" or "bhattacharyya".
    divergence: str = "kl"

Allowed values of a field come from the class attribute ``CHOICES`` when it names the field
(``CHOICES: ClassVar[dict[str, tuple]] = {"divergence": DIVERGENCE_KINDS}``), else from its
help text when a str field's help quotes two or more values, the default among them.

Forms (app/forms.py) and command-line help read this; nothing here imports a GUI.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import operator
import re
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any

CHOICES_ATTRIBUTE = "CHOICES"
_QUOTED = re.compile(r'"([^"\s]+)"')
_TOOL_COMMENT = re.compile(r"^(noqa|type:|pragma|fmt:)")
_LINE_START = (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT)


@dataclass(frozen=True)
class FieldSpec:
    """One field of a config dataclass.

    type: the resolved annotation (e.g. ``float``, ``list[float] | None``), or the
    annotation's text when it cannot be resolved. base: ``type`` without ``| None``.
    default: the default value (a fresh one from a default_factory), or
    ``dataclasses.MISSING`` when the field has none. choices: the allowed values, or None
    when any value of the type is allowed.
    """

    name: str
    type: Any
    default: Any
    help: str = ""
    choices: tuple | None = None
    optional: bool = False
    base: Any = None

    @property
    def has_default(self) -> bool:
        return self.default is not dataclasses.MISSING


def _class_tokens(config_class: type) -> list[tokenize.TokenInfo]:
    """Tokens of the class source, or [] when the source cannot be read or tokenised."""
    try:
        source = textwrap.dedent(inspect.getsource(config_class))
        return list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, tokenize.TokenError, IndentationError):
        return []


def _comment_text(token: tokenize.TokenInfo) -> str:
    text = token.string.lstrip("#").strip()
    return "" if _TOOL_COMMENT.match(text) else text


def _field_comments(config_class: type) -> dict[str, list[str]]:
    """Comment lines of each annotated name in the class body: the block just above it (at
    the body's indentation, no blank line between), then its trailing comment and the
    comment-only lines indented under that. A field with neither shares the block above
    the field before it, when no blank line or comment separates them (one block may
    document a run of fields, e.g. "Discriminator learning rate and betas")."""
    tokens = _class_tokens(config_class)
    own: dict[str, list[str]] = {}
    shared: dict[str, list[str]] = {}
    depth = 0
    body_col = -1               # the body's indentation (known once its INDENT is read)
    pending: list[str] = []     # comment lines at body indentation waiting for their field
    block: list[str] = []       # the block above the previous field, while it may be shared
    current: str | None = None  # the field whose statement or trailing comments are open
    at_line_start = True
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.INDENT:
            depth += 1
            if depth == 1:
                body_col = tok.end[1]
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.COMMENT:
            text = _comment_text(tok)
            own_line = tok.line[:tok.start[1]].strip() == ""
            if current is not None and (not own_line or tok.start[1] > body_col):
                own[current].extend([text] if text else [])
            elif own_line and tok.start[1] == body_col:
                current, block = None, []
                pending.extend([text] if text else [])
        elif tok.type == tokenize.NL and tok.line.strip() == "":
            pending, block, current = [], [], None
        elif at_line_start and tok.type not in _LINE_START and depth >= 1:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            is_field = (depth == 1 and tok.type == tokenize.NAME and nxt is not None
                        and nxt.type == tokenize.OP and nxt.string == ":")
            current = None
            if is_field:
                current = tok.string
                block = pending or block
                own.setdefault(current, []).extend(pending)
                shared[current] = block
            else:
                block = []
            pending = []
        at_line_start = tok.type in _LINE_START
    return {name: lines or shared.get(name, []) for name, lines in own.items()}


def field_docs(config_class: type) -> dict[str, str]:
    """Help text of each field of the dataclass `config_class` ("" when undocumented or the
    source is unavailable), in field order. A field a subclass inherits keeps the help of the
    class that declares it; one it redeclares takes the subclass's."""
    comments: dict[str, list[str]] = {}
    for klass in reversed(config_class.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update({k: v for k, v in _field_comments(klass).items() if v})
    return {f.name: " ".join(comments.get(f.name, [])) for f in dataclasses.fields(config_class)}


def _resolved_hints(config_class: type) -> dict[str, Any]:
    """Annotations as types, resolving postponed (string) annotations one field at a time
    so that one unresolvable name does not hide the others."""
    try:
        return typing.get_type_hints(config_class)
    except Exception:  # fall back to one field at a time below
        pass
    module = sys.modules.get(config_class.__module__)
    namespace = dict(vars(module)) if module else {}
    hints = {}
    for f in dataclasses.fields(config_class):
        hint = f.type
        if isinstance(hint, str):
            try:
                hint = eval(hint, namespace, dict(vars(config_class)))
            except Exception:  # keep the annotation text
                pass
        hints[f.name] = hint
    return hints


def split_optional(hint: Any) -> tuple[Any, bool]:
    """(`hint` without None, whether None is allowed): ``list[float] | None`` ->
    ``(list[float], True)``; ``Optional[int]`` -> ``(int, True)``; ``int`` -> ``(int, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):
            return functools.reduce(operator.or_, rest), True
    return hint, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def choices_from_help(help_text: str, default: Any) -> tuple[str, ...] | None:
    """The quoted values a str field's help lists, when there are two or more and the
    default is one of them (``'"position" (per slice), "constant", or "user"'``)."""
    quoted = tuple(dict.fromkeys(_QUOTED.findall(help_text)))
    if len(quoted) >= 2 and default in quoted:
        return quoted
    return None


def declared_choices(config_class: type) -> dict[str, tuple]:
    """The class's ``CHOICES`` mapping (field name -> allowed values); ValueError when it
    names something that is not a field."""
    declared = getattr(config_class, CHOICES_ATTRIBUTE, None) or {}
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(declared) - names)
    if unknown:
        raise ValueError(f"{config_class.__name__}.{CHOICES_ATTRIBUTE} names "
                         f"{', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                         f"not fields")
    return {name: tuple(values) for name, values in declared.items()}


def field_specs(config_class: type) -> list[FieldSpec]:
    """A FieldSpec for every field of the dataclass `config_class`, in field order."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"{config_class!r} is not a dataclass")
    docs = field_docs(config_class)
    hints = _resolved_hints(config_class)
    declared = declared_choices(config_class)
    specs = []
    for f in dataclasses.fields(config_class):
        hint = hints.get(f.name, f.type)
        base, optional = split_optional(hint)
        default = _default(f)
        choices = declared.get(f.name)
        if choices is None and base is str:
            choices = choices_from_help(docs[f.name], default)
        specs.append(FieldSpec(name=f.name, type=hint, default=default, help=docs[f.name],
                               choices=choices, optional=optional, base=base))
    return specs
