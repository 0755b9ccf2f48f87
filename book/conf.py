"""Sphinx settings of the book of an executed study (`make book`; fedvit_utils.study.book stages the sources).

Everything a page needs ships with it: the theme's own CSS and JS (Furo uses the system's fonts), math
rendered at build time to MathML (which browsers draw natively; MathJax would come from a CDN), and no
widget JavaScript (a study notebook's explorer keeps a PNG of its first frame, which the book shows).
Notebooks are never executed here: they were executed by the study.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from docutils import nodes
from latex2mathml.converter import convert
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parent.parent  # the staged sources mirror its layout

project = "fedvit"  # the builder overrides it with the run it shows
extensions = ["myst_nb"]
html_theme = "furo"
html_title = project
html_copy_source = False  # the executed notebooks are large; the run folder keeps them
html_show_sourcelink = False
html_last_updated_fmt = None
html_show_copyright = False
templates_path = ["templates"]
html_static_path = ["static"]
html_css_files = ["book.css"]
html_sidebars = {"**": ["sidebar/brand.html", "sidebar/search.html", "run-record.html",
                        "sidebar/scroll-start.html", "sidebar/navigation.html", "sidebar/scroll-end.html"]}
html_math_renderer = "mathml"
exclude_patterns = ["figures/**"]  # published figures: images that pages show, not pages

nb_execution_mode = "off"
nb_ipywidgets_js = {}
# a live widget cannot run in a static page: show the still frame (image/png) the same output carries
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_render_markdown_format = "myst"  # markdown outputs may hold $math$, like the notebooks' text
myst_enable_extensions = ["dollarmath"]
myst_dmath_allow_space = False  # as on GitHub: "$FEDVIT_DATA and $FEDVIT_PROFILE" or "$5 and $6" stay text
myst_dmath_allow_digits = False
myst_heading_anchors = 4  # links such as docs/results.md#table-1 resolve


def _mathml(translator, node: nodes.Element, display: str) -> str:
    """The node's LaTeX as MathML; LaTeX that latex2mathml cannot read is shown as its source, with a warning."""
    latex = node.astext()
    try:
        return convert(latex, display=display)
    except Exception as exc:  # latex2mathml has many error types: the page still builds, the warning names it
        logger.warning(f"equation not converted to MathML ({type(exc).__name__} {exc}): {latex}", location=node)
        return f"<code>{escape(latex)}</code>"


def _visit_inline(self, node: nodes.Element) -> None:
    self.body.append(_mathml(self, node, "inline"))
    raise nodes.SkipNode


def _visit_block(self, node: nodes.Element) -> None:
    self.body.append(f'<div class="math">{_mathml(self, node, "block")}</div>')
    raise nodes.SkipNode


class RepositoryLinks(SphinxPostTransform):
    """A link to a repository file that is not a page of the book (source code, the Makefile) becomes its
    text, instead of a link to an anchor that does not exist; a link to nothing still warns."""

    default_priority = 8  # before MyST's resolver (9), which turns every miss into a dead '#...' link

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("reftype") != "myst" or node.get("refdomain") == "doc":
                continue
            target = node["reftarget"].split("#")[0]
            page = REPOSITORY / node.get("refdoc", self.env.docname)
            if not target or not (page.parent / target).resolve().is_relative_to(REPOSITORY):
                continue
            file = (page.parent / target).resolve()
            if file.exists():
                node.replace_self(nodes.inline("", "", *node[0].deepcopy().children, classes=["repository-file"]))


def setup(app) -> None:
    """Register the MathML renderer (math drawn by the browser, nothing fetched) and the repository links."""
    app.add_html_math_renderer("mathml", inline_renderers=(_visit_inline, None),
                               block_renderers=(_visit_block, None))
    app.add_post_transform(RepositoryLinks)
