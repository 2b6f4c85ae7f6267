"""HTML reports: the page, and a section builder per stage."""

from __future__ import annotations

from probes.report.audit import (
    audit_sections,
    write_audit_report,
)
from probes.report.mediation import (
    mediation_sections,
)
from probes.report.page import (
    CSS,
    DEFAULT_JS,
    PLOTLY_JS,
    RENDER_JS,
    REPORT_NAME,
    Section,
    format_value,
    render_header,
    render_report,
    render_table,
    write_report,
)
from probes.report.run import (
    build_sections,
    write_run_report,
)

__all__ = [
    "CSS",
    "DEFAULT_JS",
    "PLOTLY_JS",
    "RENDER_JS",
    "REPORT_NAME",
    "Section",
    "audit_sections",
    "build_sections",
    "format_value",
    "mediation_sections",
    "render_header",
    "render_report",
    "render_table",
    "write_audit_report",
    "write_report",
    "write_run_report",
]
