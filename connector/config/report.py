"""The `[report]` part of the config (a mixin of `config.Checker`, which gives `table`, `fail`,
`text`, `in_range` and `beside`)."""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = ("en", "ru")


@dataclass
class ReportConfig:
    language: str = "en"
    months: int = 12
    path: str = "crm-report.html"


class ReportChecks:
    def report(self, raw) -> ReportConfig:
        d = self.table("report", raw, {"language": str, "months": int, "path": str})
        if d.get("language", "en") not in LANGUAGES:
            raise self.fail("report.language", f"must be en or ru, got {d['language']!r}")
        if "path" in d:
            self.text("report.path", d["path"], "a file path")
        self.in_range("report", d, "report.")
        d["path"] = self.beside(d.get("path", ReportConfig.path))  # beside the config file
        return ReportConfig(**d)
