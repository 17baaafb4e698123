-- impossible_day: a practitioner's billed day that no one could work: far more patients than
-- the norm, or more standard minutes of billed services than a shift holds.  Only the
-- practitioner's own services count (visits, screenings, procedures — kind 'service'); lab
-- tests they ordered are performed by others.  The whole day's billing is at risk: a day
-- that could not have happened as billed cannot be trusted in part.
WITH screen AS (
    -- first pass over every practitioner-day with cheap aggregates only: the number of
    -- lines bounds the number of distinct patients from above, so no day is missed
    SELECT c.practitioner_id, c.service_date
    FROM claims c LEFT JOIN tariffs t ON t.code = c.code
    WHERE c.practitioner_id IS NOT NULL AND c.kind = 'service'
    GROUP BY c.practitioner_id, c.service_date
    HAVING count(*) > $max_patients_per_day
        OR sum(coalesce(t.std_minutes, 0) * coalesce(c.quantity, 1)) > $max_minutes_per_day
), day AS (
    -- exact figures for the candidate days only
    SELECT c.practitioner_id, c.service_date, mode(c.provider_id) AS provider_id,
           count(DISTINCT c.person_key) AS patients,
           sum(coalesce(t.std_minutes, 0) * coalesce(c.quantity, 1)) AS minutes,
           sum(c.amount) AS amount, count(*) AS lines
    FROM claims c
    SEMI JOIN screen s ON s.practitioner_id = c.practitioner_id
                      AND s.service_date = c.service_date
    LEFT JOIN tariffs t ON t.code = c.code
    WHERE c.kind = 'service'
    GROUP BY c.practitioner_id, c.service_date
), flagged AS (
    SELECT * FROM day
    WHERE patients > $max_patients_per_day OR minutes > $max_minutes_per_day
), lines AS (
    -- second pass, only for flagged days: the claim ids and a sample for the evidence
    SELECT f.practitioner_id, f.service_date,
           list(c.claim_id ORDER BY c.claim_id) AS item_ids,
           list(struct_pack(kind := 'claim', source_system := c.source_system,
                            source_record_id := c.source_record_id, claim_id := c.claim_id,
                            date := c.service_date, code := c.code, amount := c.amount)
                ORDER BY c.claim_id)[1:$evidence_rows] AS sample
    FROM flagged f
    JOIN claims c ON c.practitioner_id = f.practitioner_id AND c.service_date = f.service_date
                 AND c.kind = 'service'
    GROUP BY f.practitioner_id, f.service_date
)
SELECT
    f.provider_id,
    f.practitioner_id,
    NULL::VARCHAR AS person_key,
    f.service_date AS period_start,
    f.service_date AS period_end,
    l.item_ids,
    to_json(struct_pack(patients := f.patients, minutes := f.minutes, lines := f.lines,
                        amount := f.amount, norm_patients := $norm_patients_per_day,
                        shift_minutes := $shift_minutes, sample_claims := l.sample))::VARCHAR
        AS evidence,
    f.amount AS amount_at_risk,
    CASE WHEN f.patients > 2 * $max_patients_per_day OR f.minutes > 2 * $max_minutes_per_day
         THEN $likelihood_extreme ELSE $likelihood END AS likelihood,
    greatest(f.patients / $norm_patients_per_day, f.minutes / $shift_minutes) AS score,
    CASE WHEN f.patients > $max_patients_per_day THEN 'patients' ELSE 'minutes' END AS detail
FROM flagged f
JOIN lines l USING (practitioner_id, service_date)
