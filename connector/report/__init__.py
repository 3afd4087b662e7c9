"""The HTML report: the page, its charts and its texts in each language."""
