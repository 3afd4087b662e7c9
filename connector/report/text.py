"""The report's words in English and Russian: titles, column heads and each chart's formula."""

from __future__ import annotations

TEXT = {
    "en": {
        "title": "Sales report",
        "source": "Source",
        "generated": "Computed at",
        "months": "Months shown",
        "tz": "Months in time zone",
        "currency": "Amounts in",
        "no_data": "No data for this chart yet.",
        "no_spend": "No spend file: set [kpi.spend] file to see CAC and LTV : CAC.",
        "funnel": "Funnel: {pipeline}",
        "stage": "Stage",
        "deals": "Deals reached",
        "conversion": "Conversion to next stage, %",
        "median_days": "Median days in stage",
        "f_funnel": "Deals reached = deals that entered the stage or a later one (a skipped stage counts "
        "as passed); after the arrow, conversion = deals reached at the next stage / deals reached "
        "here x 100.",
        "t_funnel": "Median days in stage = median time from entering the stage to the deal's next move.",
        "revenue": "Revenue and new clients by month",
        "month": "Month",
        "revenue_col": "Revenue",
        "new_clients": "New clients",
        "deals_won": "Deals won",
        "leads": "Leads",
        "lead_conversion": "Lead conversion, %",
        "lead_to_deal": "Leads converted, %",
        "f_revenue": "Revenue = sum of won deal amounts by close month; new clients = clients whose first "
        "deal was won that month.",
        "t_revenue": "Leads converted = leads of the month converted to a deal, won or not / leads x 100; "
        "lead conversion = leads of the month whose deal was won / leads x 100 (a cohort: it grows "
        "while the month's deals close).",
        "managers": "Manager league table",
        "manager": "Manager",
        "win_rate": "Win rate, %",
        "average_check": "Average check",
        "response": "Response, min",
        "calls": "Calls",
        "f_managers": "All time, per responsible user: revenue = sum of won amounts.",
        "t_managers": "In the table, win rate = won / (won + lost) x 100; average check = revenue / deals "
        "won; response = median minutes from a client's question (an incoming message or a missed "
        "call) to the manager's answer; calls = calls made or taken.",
        "channels": "Channels: CAC and LTV : CAC",
        "channel": "Channel",
        "spend": "Spend",
        "acquired": "New clients",
        "cac": "CAC",
        "ltv": "Average LTV",
        "ltv_cac": "LTV\u00a0:\u00a0CAC",
        "ltv_cac_axis": "LTV : CAC, times",
        "no_clients": "no clients",
        "no_clients_spent": "no clients, spent {spend} {currency}",
        "f_channels": "All time, per acquisition channel: CAC = spend / new clients; LTV = average revenue "
        "from a client acquired through the channel; LTV : CAC = LTV / CAC (healthy at 3 or "
        "more).",
        "churn": "Churn and repeat purchases",
        "churn_rate": "Churn rate, %",
        "share_pct": "Share of clients, %",
        "repeat_rate": "Repeat-purchase rate, %",
        "active": "Active clients at start",
        "f_churn": "A client is active for {days} days after each won deal. Churn rate = clients whose "
        "active time ran out in the month / active clients at its start x 100; repeat-purchase "
        "rate = clients buying in the month who bought before / clients buying x 100.",
        "satisfaction": "Satisfaction: NPS and CSAT",
        "nps": "NPS",
        "csat": "CSAT, %",
        "nps_answers": "NPS answers",
        "csat_answers": "CSAT answers",
        "nps_axis": "NPS, points",
        "csat_axis": "CSAT, %",
        "total": "All time",
        "f_nps": "NPS = (answers of 9-10 - answers of 0-6) / answers x 100 on the 0-10 scale: points "
        "from -100 to 100, per month of the answer.",
        "f_csat": "CSAT = answers of 4-5 / answers x 100 on the 1-5 scale, per month of the answer.",
        "measure": "measure",
        "value": "value",
        "no_measures": "No measures yet: run `{command}`.",
    },
    "ru": {
        "title": "Отчёт по продажам",
        "source": "Источник",
        "generated": "Рассчитано",
        "months": "Месяцев",
        "tz": "Месяцы по часовому поясу",
        "currency": "Суммы в",
        "no_data": "Для этого графика пока нет данных.",
        "no_spend": "Нет файла расходов: укажите [kpi.spend] file, чтобы увидеть CAC и LTV : CAC.",
        "funnel": "Воронка: {pipeline}",
        "stage": "Этап",
        "deals": "Дошло сделок",
        "conversion": "Конверсия в следующий этап, %",
        "median_days": "Медиана дней на этапе",
        "f_funnel": "Дошло сделок = сделки, попавшие на этап или дальше (пропущенный этап считается "
        "пройденным); после стрелки конверсия = дошло до следующего этапа / дошло до этого x 100.",
        "t_funnel": "Медиана дней = медиана времени от входа в этап до следующего перехода сделки.",
        "revenue": "Выручка и новые клиенты по месяцам",
        "month": "Месяц",
        "revenue_col": "Выручка",
        "new_clients": "Новые клиенты",
        "deals_won": "Выиграно сделок",
        "leads": "Лиды",
        "lead_conversion": "Конверсия лидов, %",
        "lead_to_deal": "Лиды в сделки, %",
        "f_revenue": "Выручка = сумма выигранных сделок по месяцу закрытия; новые клиенты = клиенты, чья "
        "первая сделка выиграна в этом месяце.",
        "t_revenue": "Лиды в сделки = лиды месяца, ставшие сделкой, выигранной или нет / лиды x 100; "
        "конверсия лидов = лиды месяца, чья сделка выиграна / лиды x 100 (когорта: растёт, пока "
        "сделки месяца закрываются).",
        "managers": "Рейтинг менеджеров",
        "manager": "Менеджер",
        "win_rate": "Доля выигранных, %",
        "average_check": "Средний чек",
        "response": "Ответ, мин",
        "calls": "Звонки",
        "f_managers": "За всё время, по ответственному: выручка = сумма выигранных сделок.",
        "t_managers": "В таблице доля выигранных = выиграно / (выиграно + проиграно) x 100; средний чек = "
        "выручка / выиграно сделок; ответ = медиана минут от вопроса клиента (входящее сообщение "
        "или пропущенный звонок) до ответа менеджера; звонки = совершённые и принятые звонки.",
        "channels": "Каналы: CAC и LTV : CAC",
        "channel": "Канал",
        "spend": "Расходы",
        "acquired": "Новые клиенты",
        "cac": "CAC",
        "ltv": "Средний LTV",
        "ltv_cac": "LTV\u00a0:\u00a0CAC",
        "ltv_cac_axis": "LTV : CAC, раз",
        "no_clients": "нет клиентов",
        "no_clients_spent": "нет клиентов, потрачено {spend} {currency}",
        "f_channels": "За всё время, по каналу привлечения: CAC = расходы / новые клиенты; LTV = средняя "
        "выручка от клиента, пришедшего из канала; LTV : CAC = LTV / CAC (норма от 3).",
        "churn": "Отток и повторные покупки",
        "churn_rate": "Отток, %",
        "share_pct": "Доля клиентов, %",
        "repeat_rate": "Повторные покупки, %",
        "active": "Активных клиентов на начало",
        "f_churn": "Клиент активен {days} дней после каждой выигранной сделки. Отток = клиенты, чей срок "
        "активности истёк в месяце / активные клиенты на его начало x 100; повторные покупки = "
        "купившие в месяце, кто покупал раньше / все купившие x 100.",
        "satisfaction": "Удовлетворённость: NPS и CSAT",
        "nps": "NPS",
        "csat": "CSAT, %",
        "nps_answers": "Ответов NPS",
        "csat_answers": "Ответов CSAT",
        "nps_axis": "NPS, пункты",
        "csat_axis": "CSAT, %",
        "total": "За всё время",
        "f_nps": "NPS = (оценки 9-10 - оценки 0-6) / все оценки x 100 по шкале 0-10: пункты от -100 "
        "до 100, по месяцу ответа.",
        "f_csat": "CSAT = оценки 4-5 / все оценки x 100 по шкале 1-5, по месяцу ответа.",
        "measure": "показатель",
        "value": "значение",
        "no_measures": "Показателей пока нет: запустите `{command}`.",
    },
}


def words(language: str) -> dict[str, str]:
    return TEXT[language]
