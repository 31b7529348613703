"""Data Docs that open with no network. Great Expectations' pages load bootstrap, jQuery, bootstrap-table,
Font Awesome and Vega from CDNs and the GX logo from S3 (its URL carrying the context id): offline, as in an
air-gapped review, they render unstyled and the validation list stays empty. After GX builds the site, each
of those references is pointed at a copy shipped with finsent (``docs_assets/``: the npm packages' own files,
with their licenses), placed in the site's ``static/vendor/``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).with_name("docs_assets")
VENDOR = "static/vendor"
# each remote file GX's templates name -> its copy under static/vendor
REMOTE_FILES = {
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table.min.css",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-prefers-dark.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker.min.js",
}
# the GX logo, fetched from S3 with the data context's id in the query: the site's own copy instead
REMOTE_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/([\w.-]+)(\?[^\"']*)?")
# a CDN copy is checked by the browser against these; a file:// page may not use crossorigin requests
CDN_ATTRIBUTES = re.compile(r"\s+(integrity|crossorigin)=\"[^\"]*\"")
REMOTE_ASSET = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(https?://[^\"]+)\"")


def remote_assets(page: str) -> list[str]:
    """The scripts, stylesheets and images ``page`` would fetch from the network (links to click are not)."""
    return REMOTE_ASSET.findall(page)


def make_offline(site: Path) -> int:
    """Point every page of the Data Docs ``site`` at local copies of its scripts, styles, fonts and images ->
    the number of pages rewritten."""
    shutil.copytree(ASSETS, site / VENDOR, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    pages = 0
    for page in site.rglob("*.html"):
        up = "../" * (len(page.relative_to(site).parts) - 1)
        text = original = page.read_text(encoding="utf-8")
        for url, copy in REMOTE_FILES.items():
            text = text.replace(f'"{url}"', f'"{up}{VENDOR}/{copy}"')
        text = REMOTE_LOGO.sub(lambda match: f"{up}static/images/{match.group(1)}", text)
        text = CDN_ATTRIBUTES.sub("", text)
        if text != original:
            page.write_text(text, encoding="utf-8")
            pages += 1
    return pages
