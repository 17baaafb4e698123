-- ineligible_practitioner: services billed under a practitioner who could not provide them
-- that day: no licence valid on the date, not employed by the billing provider on the date,
-- or dead (strictly before the service date, as for patients).
WITH lines AS (
    SELECT c.* FROM claims c WHERE c.practitioner_id IS NOT NULL
), licensed AS (
    SELECT DISTINCT l.claim_id FROM lines l
    JOIN licences x ON x.practitioner_id = l.practitioner_id
                   AND l.service_date >= x.valid_from
                   AND (x.valid_to IS NULL OR l.service_date <= x.valid_to)
), employed AS (
    SELECT DISTINCT l.claim_id FROM lines l
    JOIN employments e ON e.practitioner_id = l.practitioner_id AND e.org_id = l.provider_id
                      AND l.service_date >= e.start_date
                      AND (e.end_date IS NULL OR l.service_date <= e.end_date)
), hits AS (
    SELECT l.*, p.death_date,
           CASE WHEN p.death_date IS NOT NULL AND l.service_date > p.death_date THEN 'dead'
                WHEN lic.claim_id IS NULL THEN 'unlicensed'
                WHEN emp.claim_id IS NULL
                     AND l.practitioner_id IN (SELECT practitioner_id FROM employments)
                    THEN 'not_employed'
           END AS why
    FROM lines l
    -- only practitioners the registry knows are judged: an unknown id is a linkage gap
    JOIN practitioners p ON p.practitioner_id = l.practitioner_id
    LEFT JOIN licensed lic ON lic.claim_id = l.claim_id
    LEFT JOIN employed emp ON emp.claim_id = l.claim_id
)
SELECT provider_id, practitioner_id, NULL::VARCHAR AS person_key,
       min(service_date) AS period_start, max(service_date) AS period_end,
       list(claim_id ORDER BY claim_id) AS item_ids,
       to_json(struct_pack(reason := why, practitioner_death := any_value(death_date),
                           claims := count(*), amount := sum(amount),
                           sample_claims := list(struct_pack(
                               source_system := source_system,
                               source_record_id := source_record_id, claim_id := claim_id,
                               date := service_date, code := code, amount := amount)
                               ORDER BY claim_id)[1:$evidence_rows]))::VARCHAR AS evidence,
       sum(amount) AS amount_at_risk,
       CASE why WHEN 'dead' THEN $likelihood_dead WHEN 'unlicensed' THEN $likelihood_unlicensed
                ELSE $likelihood_not_employed END AS likelihood,
       count(*)::DOUBLE AS score, why AS detail
FROM hits WHERE why IS NOT NULL
GROUP BY provider_id, practitioner_id, why
