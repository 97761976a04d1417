"""The demo's one HTML page: a form, and what the engine found rendered with displaCy (spans,
each score on hover and in a table), categories as bars, relations as a list. No script: the form posts back
and the server renders the answer, so the page works in any browser and is easy to test."""
from html import escape
from typing import Dict, List, Optional

from spacy import displacy

from .engine import TASKS, DemoResult

# displaCy's entity template with the span's score as a tooltip and data attributes (displaCy
# passes a span's "params" into its template)
SPAN_TEMPLATE = """
<mark class="entity" data-label="{label}" data-score="{score}" title="{label}: score {score}"
 style="background: {bg}; padding: 0.45em 0.6em; margin: 0 0.25em; line-height: 1; border-radius: 0.35em;">
    {text}
    <span style="font-size: 0.8em; font-weight: bold; vertical-align: middle; margin-left: 0.5rem">{label}</span>
</mark>
"""
# one color a label, in the order labels were typed
PALETTE = ("#7aecec", "#feca74", "#aa9cfc", "#bfe1d9", "#ff9561", "#c887fb", "#9cc9cc", "#ffeb80", "#e4e7d2",
           "#ff8197")
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
textarea, input[type=text] { width: 100%; box-sizing: border-box; font: inherit; padding: 0.4rem; }
label { display: block; margin-top: 0.8rem; font-weight: 600; }
button { margin-top: 1rem; padding: 0.5rem 1.5rem; font: inherit; }
#error { background: #fde2e1; border: 1px solid #e0605a; padding: 0.6rem; margin-top: 1rem; }
.cat { display: flex; align-items: center; gap: 0.6rem; margin: 0.25rem 0; }
.cat .name { width: 12rem; } .cat .bar { background: #4c8bf5; height: 1rem; }
.muted { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin-top: 1rem; } td, th { padding: 0.2rem 0.8rem; text-align: left; }
th { border-bottom: 1px solid #ccc; }
"""


def _colors(labels: List[str]) -> Dict[str, str]:
    return {label.upper(): PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _score(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.3f}"


def render_spans(result: DemoResult) -> str:
    """The text with its spans highlighted by displaCy (spans overlapping an earlier one are left
    out of the highlight, as displaCy's entity view cannot draw them; the list below has all)."""
    ents, end = [], 0
    for start, stop, label, score in sorted(result.spans):
        if start >= end:
            # displaCy escapes the text but puts labels into its template as they are: typed by a person here
            ents.append({"start": start, "end": stop, "label": escape(label), "params": {"score": _score(score)}})
            end = stop
    labels = list(dict.fromkeys(escape(label) for _, _, label, _ in result.spans))
    return displacy.render({"text": result.text, "ents": ents, "title": None}, style="ent", manual=True,
                           options={"template": SPAN_TEMPLATE, "colors": _colors(labels)})


def render_result(result: DemoResult) -> str:
    if result.error:
        return f'<div id="error" role="alert">{escape(result.error)}</div>'
    parts = [f'<p id="time" class="muted">{escape(result.task)} took {result.seconds:.2f} s</p>']
    if result.task == "textcat":
        bars = "".join(f'<div class="cat" data-label="{escape(label)}" data-score="{score:.3f}">'
                       f'<span class="name">{escape(label)}</span>'
                       f'<span class="bar" style="width: {max(score, 0.0) * 30:.2f}rem"></span>'
                       f'<span>{score:.3f}</span></div>' for label, score in result.cats.items())
        parts.append(f'<div id="cats">{bars}</div>')
        return "".join(parts)
    parts.append(f'<div id="spans">{render_spans(result)}</div>')
    if not result.spans:
        parts.append('<p id="none" class="muted">Nothing found for these labels.</p>')
    else:  # every span with its score, overlapping ones too
        rows = "".join(f"<tr><td>{escape(result.text[start:stop])}</td><td>{escape(label)}</td><td>{_score(score)}</td>"
                       f"</tr>" for start, stop, label, score in result.spans)
        head = "question" if result.task == "questions" else "label"
        parts.append(f'<table id="span-list"><tr><th>span</th><th>{head}</th><th>score</th></tr>{rows}</table>')
    if result.task == "relations":
        items = "".join(f"<li>{escape(head)} <b>{escape(label)}</b> {escape(tail)} ({score:.3f})</li>"
                        for head, label, tail, score in result.relations)
        parts.append(f'<ul id="relations">{items or "<li>no relation found</li>"}</ul>')
    return "".join(parts)


def render_page(*, source: str, tasks: List[str], form: Dict[str, str], result: Optional[DemoResult] = None) -> str:
    """The whole page: the form filled with ``form`` (what was sent), and ``result`` under it."""
    task = form.get("task", tasks[0])
    options = "".join(f'<option value="{name}"{" selected" if name == task else ""}>{name}</option>' for name in tasks)
    needs_ents = [name for name in tasks if TASKS[name][1]]
    value = {key: escape(form.get(key, "")) for key in ("text", "labels", "entity_labels")}
    entity_field = (f'<label for="entity_labels">Entity labels (for {" and ".join(needs_ents)}: the entities to find '
                    f'first)</label><input type="text" id="entity_labels" name="entity_labels" '
                    f'value="{value["entity_labels"]}">') if needs_ents else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>SeqGPT demo</title><style>{STYLE}</style></head>
<body>
<h1>SeqGPT demo</h1>
<p class="muted">Model: {escape(source)}. Labels are chosen here, at run time.</p>
<form method="post" action="/">
<label for="text">Text</label><textarea id="text" name="text" rows="6">{value["text"]}</textarea>
<label for="task">Task</label><select id="task" name="task">{options}</select>
<label for="labels">Labels (comma-separated; textcat: the categories; questions: one a line)</label>
<textarea id="labels" name="labels" rows="2">{value["labels"]}</textarea>
{entity_field}
<button type="submit" id="run">Run</button>
</form>
<div id="result">{render_result(result) if result is not None else ""}</div>
</body></html>"""
