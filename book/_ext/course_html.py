"""Small fixes to the HTML of the book, so that every page loads without console errors.

- With Sphinx 7.4, the configuration script of sphinx-thebe (loaded by Jupyter Book 1.x even when Thebe is
  not used) is added to each page twice, and the second ``const THEBE_JS_URL`` is a script error. Identical
  inline scripts are kept once.
"""

from __future__ import annotations


def keep_each_script_once(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""), repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", keep_each_script_once)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
