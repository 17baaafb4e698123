-- impossible_day: a practitioner's billed day that no one could work: far more patients than
-- the norm, or more standard minutes of billed services than a shift holds.  The amount at
-- risk is the share of the day's billing beyond what a full day at the norm could hold.
WITH day AS (
    SELECT c.practitioner_id, c.service_date,
           mode(c.provider_id) AS provider_id,
           count(DISTINCT c.person_key) AS patients,
           sum(coalesce(t.std_minutes, 0) * coalesce(c.quantity, 1)) AS minutes,
           sum(c.amount) AS amount,
           count(*) AS lines,
           list(c.claim_id ORDER BY c.claim_id) AS item_ids,
           list(struct_pack(kind := 'claim', source_system := c.source_system,
                            source_record_id := c.source_record_id, claim_id := c.claim_id,
                            date := c.service_date, code := c.code, amount := c.amount)
                ORDER BY c.claim_id)[1:$evidence_rows] AS sample
    FROM claims c LEFT JOIN tariffs t ON t.code = c.code
    WHERE c.practitioner_id IS NOT NULL AND c.kind IN ('service', 'lab')
    GROUP BY c.practitioner_id, c.service_date
), flagged AS (
    SELECT *,
           greatest(1 - $norm_patients_per_day / patients,
                    CASE WHEN minutes > 0 THEN 1 - $shift_minutes / minutes ELSE 0 END)
               AS excess_share
    FROM day
    WHERE patients > $max_patients_per_day OR minutes > $max_minutes_per_day
)
SELECT
    provider_id,
    practitioner_id,
    NULL::VARCHAR AS person_key,
    service_date AS period_start,
    service_date AS period_end,
    item_ids,
    to_json(struct_pack(patients := patients, minutes := minutes, lines := lines,
                        amount := amount, norm_patients := $norm_patients_per_day,
                        shift_minutes := $shift_minutes, sample_claims := sample))::VARCHAR
        AS evidence,
    amount * greatest(excess_share, 0) AS amount_at_risk,
    CASE WHEN patients > 2 * $max_patients_per_day OR minutes > 2 * $max_minutes_per_day
         THEN $likelihood_extreme ELSE $likelihood END AS likelihood,
    greatest(patients / $norm_patients_per_day, minutes / $shift_minutes) AS score,
    CASE WHEN patients > $max_patients_per_day THEN 'patients' ELSE 'minutes' END AS detail
FROM flagged
