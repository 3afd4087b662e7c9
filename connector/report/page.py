"""`crm-connector report`: the `metrics` table as one self-contained HTML page.

Reads only the mirror (the KPI job computes the measures): per source a funnel per pipeline,
revenue and new clients by month, the manager league table, channels with CAC and LTV : CAC,
churn and repeat purchases, NPS / CSAT. Every number shown is one `metrics` row (tables carry
the row's key; see `report_charts`), every chart states its formula, labels in English or
Russian. Monthly charts show the last `months` months the measures cover.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from connector.report.charts import Num, Section, bars_and_line, channel_bars, hbar, lines, page
from connector.report.formats import fmt, moment, pct
from connector.report.formats import month as month_label
from connector.report.text import words

Key = tuple[str, str, str, str]
TOP_MANAGERS = 30


class ReportError(Exception):
    """The report cannot be made (no measures yet); the message says what to run."""


@dataclass
class Names:
    """Display names from the mirror: pipelines, stages, users."""

    pipelines: dict[str, str]
    stages: dict[str, tuple[str, int, str]]  # 'pipeline/stage' -> (name, sort, semantics)
    users: dict[str, str]


def load_metrics(conn, source: str) -> tuple[dict[Key, float | None], str | None]:
    """Every stored measure of the source by key, and when they were computed."""
    rows = conn.execute(
        "SELECT measure, period, dimension, dimension_value, value, computed_at "
        "FROM metrics WHERE source = ?",
        (source,),
    ).fetchall()
    return {tuple(r[:4]): r[4] for r in rows}, max((r[5] for r in rows), default=None)


def load_names(conn, source: str) -> Names:
    pipes = {
        str(i): n or str(i)
        for i, n in conn.execute("SELECT id, name FROM pipelines WHERE source = ?", (source,))
    }
    stages = {
        f"{p}/{i}": (n or str(i), s or 0, sem or "open")
        for p, i, n, s, sem in conn.execute(
            "SELECT pipeline_id, id, name, sort, semantics FROM stages WHERE source = ?", (source,)
        )
    }
    users = {
        str(i): n or f"#{i}"
        for i, n in conn.execute("SELECT id, name FROM users WHERE source = ?", (source,))
    }
    return Names(pipes, stages, users)


class Builder:
    """The sections of one source, from its measures."""

    def __init__(
        self,
        m: dict[Key, float | None],
        names: Names,
        language: str,
        months: int,
        churn_days: int,
        currency: str = "",
    ):
        self.m, self.names, self.lang, self.w = m, names, language, words(language)
        self.churn_days, self.currency = churn_days, currency
        monthly = sorted({k[1] for k in m if k[0] == "revenue" and k[1] != "all"})
        self.periods = monthly[-months:]

    def num(self, measure: str, period: str = "all", dimension: str = "all", value: str = "all") -> Num:
        key = (measure, period, dimension, value)
        return Num(key, self.m.get(key))

    def has(self, measure: str) -> bool:
        return any(k[0] == measure for k in self.m)

    def text(self, n: Num) -> str:
        return fmt(n.value, self.lang)

    def month(self, period: str) -> str:
        return month_label(period, self.lang)

    def money(self, key: str) -> str:
        """A column or axis title of an amount, with the currency: 'Revenue, RUB'."""
        return f"{self.w[key]}, {self.currency}" if self.currency else self.w[key]

    def sections(self) -> list[Section]:
        return [
            *self.funnels(),
            self.revenue(),
            self.managers(),
            self.channels(),
            self.churn(),
            self.satisfaction(),
        ]

    # -- funnel per pipeline ----------------------------------------------------------------------
    def funnels(self) -> list[Section]:
        stages = sorted(
            {k[3] for k in self.m if k[0] == "funnel_deals"},
            key=lambda s: (
                self.names.stages.get(s, ("", 0, "open"))[2] == "won",
                self.names.stages.get(s, ("", 0, ""))[1],
                s,
            ),
        )
        pipelines = list(dict.fromkeys(s.split("/")[0] for s in stages))
        if not pipelines:
            return [Section(self.w["funnel"].format(pipeline=""), self.w["f_funnel"], note=self.w["no_data"])]
        return [self.funnel(p, [s for s in stages if s.split("/")[0] == p]) for p in pipelines]

    def funnel(self, pipeline: str, stages: list[str]) -> Section:
        w, rows, data = self.w, [], []
        for s in stages:
            name = self.names.stages.get(s, (s,))[0]
            deals, conv = (
                self.num("funnel_deals", dimension="stage", value=s),
                self.num("funnel_conversion", dimension="stage", value=s),
            )
            days = self.num("stage_median_days", dimension="stage", value=s)
            rows.append([name, deals, conv, days])
            label = self.text(deals) + (f" → {pct(conv.value, self.lang)}" if conv.value is not None else "")
            data.append({"stage": name, "deals": deals.value or 0, "label": label})
        title = w["funnel"].format(pipeline=self.names.pipelines.get(pipeline, pipeline))
        return Section(
            title,
            w["f_funnel"],
            hbar(data, "stage", "deals", "label", w["deals"]),
            [w["stage"], w["deals"], w["conversion"], w["median_days"]],
            rows,
            table_note=w["t_funnel"],
        )

    # -- revenue and new clients ------------------------------------------------------------------
    def revenue(self) -> Section:
        w, rows, data = self.w, [], []
        leads = self.has("leads")
        for p in self.periods:
            rev, new, won = self.num("revenue", p), self.num("new_clients", p), self.num("deals_won", p)
            row = [self.month(p), rev, new, won]
            if leads:
                row += [self.num("leads", p), self.num("lead_to_deal", p), self.num("lead_conversion", p)]
            rows.append(row)
            data.append({"month": self.month(p), "revenue": rev.value or 0, "clients": new.value or 0})
        head = [w["month"], self.money("revenue_col"), w["new_clients"], w["deals_won"]]
        head += [w["leads"], w["lead_to_deal"], w["lead_conversion"]] if leads else []
        chart = (
            bars_and_line(data, "month", "revenue", "clients", self.money("revenue_col"), w["new_clients"])
            if data
            else None
        )
        return Section(
            w["revenue"], w["f_revenue"], chart, head, rows, w["no_data"], w["t_revenue"] if leads else ""
        )

    # -- managers ---------------------------------------------------------------------------------
    def managers(self) -> Section:
        w = self.w
        ids = [k[3] for k in self.m if k[0] == "manager_revenue"]
        ids.sort(key=lambda i: (-(self.m[("manager_revenue", "all", "manager", i)] or 0), i))
        rows, data = [], []
        for i in ids[:TOP_MANAGERS]:
            cells = [
                self.num(f"manager_{x}", dimension="manager", value=i)
                for x in ("revenue", "deals_won", "win_rate", "average_check", "response_minutes", "calls")
            ]
            name = self.names.users.get(i, f"#{i}")
            rows.append([name, *cells])
            data.append({"manager": name, "revenue": cells[0].value or 0, "label": self.text(cells[0])})
        chart = (
            hbar(data, "manager", "revenue", "label", self.money("revenue_col"), "#54A24B") if data else None
        )
        return Section(
            w["managers"],
            w["f_managers"],
            chart,
            [
                w["manager"],
                self.money("revenue_col"),
                w["deals_won"],
                w["win_rate"],
                self.money("average_check"),
                w["response"],
                w["calls"],
            ],
            rows,
            w["no_data"],
            w["t_managers"],
        )

    # -- channels ---------------------------------------------------------------------------------
    def channels(self) -> Section:
        w = self.w
        chans = sorted({k[3] for k in self.m if k[0] == "spend" and k[1] == "all"})
        rows, data = [], []
        for c in chans:
            spend, acquired, cac, ltv, ratio = (
                self.num(x, dimension="channel", value=c)
                for x in ("spend", "acquired_clients", "cac", "ltv", "ltv_cac")
            )
            # Spend that brought nobody has no CAC: say so and show what it cost.
            unpaid = cac.value is None and (spend.value or 0) > 0 and not acquired.value
            cost = w["no_clients_spent"].format(spend=self.text(spend), currency=self.currency).strip()
            if unpaid:
                cac, ratio = Num(cac.key, None, w["no_clients"]), Num(ratio.key, None, w["no_clients"])
            rows.append([c, spend, acquired, cac, ltv, ratio])
            data.append(
                {
                    "channel": c,
                    "cac": cac.value or 0,
                    "cac_text": cost if unpaid else self.text(cac),
                    "ratio": ratio.value or 0,
                    "ratio_text": w["no_clients"] if unpaid else self.text(ratio),
                }
            )
        chart = channel_bars(data, "cac", "ratio", self.money("cac"), w["ltv_cac_axis"]) if data else None
        head = [w["channel"], self.money("spend"), w["acquired"], self.money("cac"), self.money("ltv")]
        return Section(w["channels"], w["f_channels"], chart, [*head, w["ltv_cac"]], rows, w["no_spend"])

    # -- churn and repeat purchases ---------------------------------------------------------------
    def churn(self) -> Section:
        w, rows, data = self.w, [], []
        for p in self.periods:
            active, churn, rep = (
                self.num("active_clients", p),
                self.num("churn_rate", p),
                self.num("repeat_purchase_rate", p),
            )
            rows.append([self.month(p), active, churn, rep])
            for label, n in ((w["churn_rate"], churn), (w["repeat_rate"], rep)):
                if n.value is not None:
                    data.append({"month": self.month(p), "series": label, "value": n.value})
        chart = lines(data, "month", "series", "value", w["share_pct"]) if data else None
        return Section(
            w["churn"],
            w["f_churn"].format(days=self.churn_days),
            chart,
            [w["month"], w["active"], w["churn_rate"], w["repeat_rate"]],
            rows,
            w["no_data"],
        )

    # -- satisfaction -----------------------------------------------------------------------------
    def satisfaction(self) -> Section:
        w, rows, data, drawn = self.w, [], [], []
        for p in self.periods + ["all"]:
            cells = [self.num(x, p) for x in ("nps", "nps_answers", "csat", "csat_answers")]
            if all(c.value is None for c in cells):
                continue
            label = self.month(p) if p != "all" else w["total"]
            rows.append([label, *cells])
            for name, n in (("nps", cells[0]), ("csat", cells[2])):
                if n.value is not None and p != "all":
                    data.append({"month": label, "series": w[name], "value": n.value})
                    drawn += [name] if name not in drawn else []
        drawn = [x for x in ("nps", "csat") if x in drawn]
        chart = (
            lines(data, "month", "series", "value", "; ".join(w[f"{x}_axis"] for x in drawn))
            if data
            else None
        )
        # The text above the chart defines what it draws; the other score only has table columns.
        above = " ".join(w[f"f_{x}"] for x in drawn) if drawn else w["f_nps"] + " " + w["f_csat"]
        below = " ".join(w[f"f_{x}"] for x in ("nps", "csat") if x not in drawn) if drawn else ""
        return Section(
            w["satisfaction"],
            above,
            chart,
            [w["month"], w["nps"], w["nps_answers"], w["csat"], w["csat_answers"]],
            rows,
            w["no_data"],
            below,
        )


def build(conn, sources, *, language: str, months: int, churn_days: int, tz: str) -> str:
    """The HTML of the report on `sources` (SourceConfig list), read from `conn`: the mirror's
    connection, or {source name: connection} when each source has its own mirror file. A
    source with no measures yet gets a line saying so; ReportError when none has any."""
    conns = conn if isinstance(conn, dict) else {s.name: conn for s in sources}
    w, blocks = words(language), []
    empty = [s.name for s in sources if not load_metrics(conns[s.name], s.name)[0]]
    if len(empty) == len(sources):
        if len(empty) == 1:
            raise ReportError(
                f"source '{empty[0]}' has no measures yet: run `crm-connector kpi --source {empty[0]}` first"
            )
        names = ", ".join(f"'{n}'" for n in empty)
        raise ReportError(f"sources {names} have no measures yet: run `crm-connector kpi` first")
    for src in sources:
        conn = conns[src.name]
        m, at = load_metrics(conn, src.name)
        if not m:
            blocks.append(
                (
                    f"{w['source']}: {src.name}",
                    w["no_measures"].format(command=f"crm-connector kpi --source {src.name}"),
                    [],
                )
            )
            continue
        b = Builder(m, load_names(conn, src.name), language, months, churn_days, src.currency)
        meta = (
            f"{w['generated']}: {moment(at, tz, language)} · {w['tz']}: {tz} · {w['currency']}: {src.currency} · "
            f"{w['months']}: {len(b.periods)}"
        )
        blocks.append((f"{w['source']}: {src.name}", meta, b.sections()))
    return page(w["title"], language, blocks)


def write(path: str, text: str) -> int:
    """Write the page next to a temporary name, then move it in place; its size in bytes."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return os.path.getsize(path)
