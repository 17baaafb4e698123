-- phantom_attachment: per-capita funding paid for people who cannot be the polyclinic's
-- patients: attached after death, after emigration, or never seen by anyone for
-- $no_contact_months months.  Capitation is paid per person-month: a month is at risk when
-- the person was (still) attached on its first day after the event.  date_diff('month', a, b)
-- counts the month starts in (a, b], which is exactly that.  Only months inside the
-- observation window ($window_months months up to the as-of date) count.  Each month is
-- valued at the capitation rate the fund paid that polyclinic for that month (payments,
-- kind 'capitation'); a month without a payment in the extract at the tariff's rate.
WITH att AS (
    SELECT a.*, least(coalesce(a.end_date, $as_of::DATE), $as_of::DATE) AS paid_to
    FROM attachments a
), contact AS (
    SELECT person_key, max(d) AS last_contact FROM (
        SELECT person_key, service_date AS d FROM claims
        UNION ALL SELECT person_key, encounter_date FROM encounters
        UNION ALL SELECT person_key, dispense_date FROM dispensations
        UNION ALL SELECT person_key, test_date FROM lab_tests
        UNION ALL SELECT person_key, discharge_date FROM stays
        UNION ALL SELECT person_key, diagnosis_date FROM diagnoses
    ) WHERE d <= $as_of::DATE GROUP BY person_key
), tariff_rate AS (
    SELECT coalesce(max(price), 0) AS rate FROM tariffs WHERE kind = 'capitation'
), paid_rate AS (
    SELECT provider_id, period_month,
           max(coalesce(rate, amount / nullif(attached_count, 0))) AS rate
    FROM payments WHERE kind = 'capitation' AND period_month IS NOT NULL
    GROUP BY provider_id, period_month
), classified AS (
    SELECT att.*, p.death_date, p.death_source, p.death_record,
           p.emigration_date, p.emigration_source, p.emigration_record, c.last_contact,
           CASE
               WHEN p.death_date IS NOT NULL AND p.death_date < att.paid_to THEN 'dead'
               WHEN p.emigration_date IS NOT NULL AND p.emigration_date < att.paid_to
                   THEN 'emigrated'
               -- never seen: attached through the whole window, no contact in it
               WHEN coalesce(c.last_contact, DATE '0001-01-01')
                    <= $as_of::DATE - to_months($no_contact_months)
                    AND att.start_date <= $as_of::DATE - to_months($no_contact_months)
                    AND att.paid_to >= $as_of::DATE
                   THEN 'no_contact'
           END AS reason
    FROM att LEFT JOIN person_facts p USING (person_key)
    LEFT JOIN contact c USING (person_key)
), at_risk AS (
    -- month starts counted are those in (risk_from, paid_to]: strictly after the event,
    -- on or after the attachment start (hence start - 1 day), inside the window
    SELECT *, row_number() OVER () AS rid,
           greatest(start_date - INTERVAL 1 DAY,
                    $as_of::DATE - to_months($window_months),
                    CASE reason
                        WHEN 'dead' THEN death_date
                        WHEN 'emigrated' THEN emigration_date
                        ELSE coalesce(last_contact, DATE '0001-01-01')
                    END)::DATE AS risk_from
    FROM classified WHERE reason IS NOT NULL
), months AS (
    -- the month starts in (risk_from, paid_to], each at the rate paid for it
    SELECT m.rid, coalesce(p.rate, (SELECT rate FROM tariff_rate)) AS rate,
           p.rate IS NOT NULL AS paid
    FROM (SELECT rid, org_id, unnest(generate_series(
                     (date_trunc('month', risk_from) + INTERVAL 1 MONTH)::TIMESTAMP,
                     paid_to::TIMESTAMP, INTERVAL 1 MONTH))::DATE AS month
          FROM at_risk) m
    LEFT JOIN paid_rate p ON p.provider_id = m.org_id AND p.period_month = m.month
), amounts AS (
    SELECT rid, count(*) AS months, sum(rate) AS amount,
           count(*) FILTER (WHERE paid) AS paid_months
    FROM months GROUP BY rid
)
SELECT
    org_id AS provider_id,
    NULL::VARCHAR AS practitioner_id,
    person_key,
    risk_from AS period_start,
    paid_to AS period_end,
    [attachment_id] AS item_ids,
    to_json([struct_pack(kind := 'attachment', source_system := source_system,
                         source_record_id := source_record_id, date := start_date,
                         end_date := end_date, event := reason,
                         event_date := CASE reason WHEN 'dead' THEN death_date
                             WHEN 'emigrated' THEN emigration_date ELSE last_contact END,
                         event_source := CASE reason WHEN 'dead' THEN death_source
                             WHEN 'emigrated' THEN emigration_source END,
                         event_record := CASE reason WHEN 'dead' THEN death_record
                             WHEN 'emigrated' THEN emigration_record END,
                         months := months, paid_months := paid_months,
                         rate := amount / months)])::VARCHAR
        AS evidence,
    amount AS amount_at_risk,
    CASE reason WHEN 'dead' THEN $likelihood_dead WHEN 'emigrated' THEN $likelihood_emigrated
         ELSE $likelihood_no_contact END AS likelihood,
    months::DOUBLE AS score,
    reason AS detail
FROM at_risk JOIN amounts USING (rid)
