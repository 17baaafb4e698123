-- ineligible_practitioner: services billed under a practitioner who could not provide them
-- that day: dead (strictly before the service date, as for patients), no licence valid on
-- the date, or not employed there.  Services and lab tests count (a lab test is billed under
-- the practitioner who ordered it); drug lines name the prescriber and are left out.  For a
-- service the practitioner must be employed by the billing provider; for a lab test billed
-- by the laboratory, by some provider.
WITH lines AS (
    -- only practitioners the registry knows are judged: an unknown id is a linkage gap
    SELECT c.* FROM claims c SEMI JOIN practitioners p USING (practitioner_id)
    WHERE c.kind IN ('service', 'lab')
), dead AS (
    SELECT l.*, 1 AS priority, 'dead' AS why, p.death_date
    FROM lines l JOIN practitioners p USING (practitioner_id)
    WHERE p.death_date IS NOT NULL AND l.service_date > p.death_date
), unlicensed AS (
    -- anti joins keep only the few failing lines (a per-line EXISTS is far slower)
    SELECT l.*, 2 AS priority, 'unlicensed' AS why, NULL::DATE AS death_date
    FROM lines l ANTI JOIN licences x
      ON x.practitioner_id = l.practitioner_id AND l.service_date >= x.valid_from
     AND (x.valid_to IS NULL OR l.service_date <= x.valid_to)
), not_employed AS (
    SELECT l.*, 3 AS priority, 'not_employed' AS why, NULL::DATE AS death_date
    FROM lines l
    SEMI JOIN (SELECT DISTINCT practitioner_id FROM employments) r USING (practitioner_id)
    ANTI JOIN employments e
      ON e.practitioner_id = l.practitioner_id AND (e.org_id = l.provider_id OR l.kind = 'lab')
     AND l.service_date >= e.start_date AND (e.end_date IS NULL OR l.service_date <= e.end_date)
), hits AS (
    SELECT * FROM (SELECT * FROM dead UNION ALL SELECT * FROM unlicensed
                   UNION ALL SELECT * FROM not_employed)
    QUALIFY row_number() OVER (PARTITION BY claim_id ORDER BY priority) = 1
)
SELECT mode(provider_id) AS provider_id, practitioner_id, NULL::VARCHAR AS person_key,
       min(service_date) AS period_start, max(service_date) AS period_end,
       list(claim_id ORDER BY claim_id) AS item_ids,
       to_json(struct_pack(reason := why, practitioner_death := any_value(death_date),
                           claims := count(*), amount := sum(amount),
                           sample_claims := list(struct_pack(
                               source_system := source_system,
                               source_record_id := source_record_id, claim_id := claim_id,
                               provider := provider_id, date := service_date, code := code,
                               amount := amount)
                               ORDER BY claim_id)[1:$evidence_rows]))::VARCHAR AS evidence,
       sum(amount) AS amount_at_risk,
       CASE why WHEN 'dead' THEN $likelihood_dead WHEN 'unlicensed' THEN $likelihood_unlicensed
                ELSE $likelihood_not_employed END AS likelihood,
       count(*)::DOUBLE AS score, why AS detail
FROM hits
GROUP BY practitioner_id, why
