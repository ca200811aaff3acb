"""Letters to the requesting agency (tata naskah dinas), rendered HTML -> PDF.

- numbering: letter numbers, a running number per office and year, never reused;
- render: Jinja2 templates in templates/letters/ to HTML, WeasyPrint to PDF;
- issue: which letter a request gets (configuration data or reply), its data,
  the files and the event that records them; also the SOP actions;
- sheet: the separate credentials sheet (RAHASIA), the one place passwords appear.
"""
