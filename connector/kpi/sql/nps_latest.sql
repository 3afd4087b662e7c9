-- nps_latest: the client's newest NPS score (0-10): from the CRM's own survey answers on its card
-- or deals, or the [kpi.survey] nps_field on its card (dated by the card's last change);
-- empty when the client never answered.
-- reads: survey_answers, contacts, companies, deals, deal_contacts
SELECT c.entity_id,
       (SELECT s.score FROM kpi_survey s WHERE s.entity_id = c.entity_id AND s.kind = 'nps'
        ORDER BY s.at DESC, s.answer_id DESC LIMIT 1) AS value
FROM kpi_clients c
