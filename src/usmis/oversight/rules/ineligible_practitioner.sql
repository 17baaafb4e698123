-- ineligible_practitioner: services billed under a practitioner who could not provide them
-- that day: dead (strictly before the service date, as for patients), no licence valid on
-- the date, or not employed there.  Services and lab tests count (a lab test is billed under
-- the practitioner who ordered it); drug lines name the prescriber and are left out.  For a
-- service the practitioner must be employed by the billing provider; for a lab test billed
-- by the laboratory, by some provider.
WITH lines AS (
    SELECT c.*,
           EXISTS (SELECT 1 FROM licences x
                   WHERE x.practitioner_id = c.practitioner_id
                     AND c.service_date >= x.valid_from
                     AND (x.valid_to IS NULL OR c.service_date <= x.valid_to)) AS licensed,
           EXISTS (SELECT 1 FROM employments e
                   WHERE e.practitioner_id = c.practitioner_id
                     AND (e.org_id = c.provider_id OR c.kind = 'lab')
                     AND c.service_date >= e.start_date
                     AND (e.end_date IS NULL OR c.service_date <= e.end_date)) AS employed
    FROM claims c
    WHERE c.practitioner_id IS NOT NULL AND c.kind IN ('service', 'lab')
), registered AS (
    SELECT DISTINCT practitioner_id FROM employments
), hits AS (
    SELECT l.*, p.death_date,
           CASE WHEN p.death_date IS NOT NULL AND l.service_date > p.death_date THEN 'dead'
                WHEN NOT l.licensed THEN 'unlicensed'
                WHEN NOT l.employed AND r.practitioner_id IS NOT NULL THEN 'not_employed'
           END AS why
    FROM lines l
    -- only practitioners the registry knows are judged: an unknown id is a linkage gap
    JOIN practitioners p ON p.practitioner_id = l.practitioner_id
    LEFT JOIN registered r ON r.practitioner_id = l.practitioner_id
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
FROM hits WHERE why IS NOT NULL
GROUP BY practitioner_id, why
