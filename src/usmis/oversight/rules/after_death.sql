-- after_death: claim lines (services, lab tests, drugs, stays) dated after the person's
-- registered death.  Strictly after: a service on the day of death is legitimate (people
-- die in hospital after being treated).  One finding per person and provider.
WITH hits AS (
    SELECT c.*, p.death_date, p.death_source, p.death_record,
           date_diff('day', p.death_date, c.service_date) AS days_after
    FROM claims c
    JOIN person_facts p USING (person_key)
    WHERE p.death_date IS NOT NULL AND c.service_date > p.death_date
)
SELECT
    provider_id,
    mode(practitioner_id) AS practitioner_id,
    person_key,
    min(service_date) AS period_start,
    max(service_date) AS period_end,
    list(claim_id ORDER BY claim_id) AS item_ids,
    to_json(list_concat(list(struct_pack(
        kind := 'claim', source_system := source_system, source_record_id := source_record_id,
        claim_id := claim_id, date := service_date, code := code, amount := amount,
        billing_system := billing_system, record_type := record_type, record_id := record_id
    ) ORDER BY service_date, claim_id), [struct_pack(
        kind := 'death', source_system := any_value(death_source),
        source_record_id := any_value(death_record), claim_id := NULL::VARCHAR,
        date := any_value(death_date), code := NULL::VARCHAR, amount := NULL::DOUBLE,
        billing_system := NULL::VARCHAR, record_type := 'life_event', record_id := NULL::VARCHAR
    )]))::VARCHAR AS evidence,
    sum(amount) AS amount_at_risk,
    CASE WHEN max(days_after) > $grace_days THEN $likelihood ELSE $likelihood_near END
        AS likelihood,
    max(days_after)::DOUBLE AS score,
    'after_death' AS detail
FROM hits
GROUP BY provider_id, person_key
