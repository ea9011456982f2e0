"""Data cards as pages: `<cards>/<name>.md` rendered to HTML (raw HTML in the markdown is escaped, not passed
through), its plots served from the same folder so the card's relative image links resolve; nothing outside it."""

from __future__ import annotations

import html
from pathlib import Path

from clipmodule.serve.limits import RequestError, file_under

CARD_FILES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
              ".json": "application/json", ".md": "text/markdown; charset=utf-8"}
"""The files of a cards folder the service hands out, by suffix."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body class="card-page"><nav><a href="/">search</a> · <a href="/#cards">cards</a>{mlflow}</nav>
<article id="card">{body}</article></body></html>
"""


def card_names(cards: Path | None) -> list[str]:
    return sorted(path.stem for path in cards.glob("*.md") if path.stem.upper() != "TEMPLATE") if cards else []


def render_card(cards: Path, name: str, mlflow_ui: str | None = None) -> str:
    """The HTML page of card `name` (404 when absent, 403 when the name leaves the folder)."""
    from markdown_it import MarkdownIt

    path = file_under(cards, f"{name}.md")
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(path.read_text(encoding="utf-8"))
    link = f' · <a href="{html.escape(mlflow_ui)}">MLflow runs</a>' if mlflow_ui else ""
    return PAGE.format(title=html.escape(f"Data card: {name}"), body=body, mlflow=link)


def card_file(cards: Path, relative: str) -> tuple[Path, str]:
    """(path, media type) of a file the cards folder serves."""
    media = CARD_FILES.get(Path(relative).suffix.lower())
    path = file_under(cards, relative)
    if media is None:
        raise RequestError(404, f"{relative}: not a card or a card's plot")
    return path, media
