-- excess_units: quantities that cannot be right.  (a) A claim line of a service or lab test
-- with more units than the tariff allows per day.  (b) A dispensation with more dosage units
-- than the maximum daily dose × the days supplied.  Only the excess is at risk.
WITH units AS (
    SELECT c.provider_id, c.practitioner_id, c.person_key, c.service_date, c.claim_id,
           c.source_system, c.source_record_id, c.code, c.amount, c.quantity,
           t.max_units_per_day AS allowed, NULL::INTEGER AS days_supply, 'units_per_day' AS why
    FROM claims c JOIN tariffs t ON t.code = c.code
    WHERE c.kind IN ('service', 'lab') AND t.max_units_per_day IS NOT NULL
      AND c.quantity > t.max_units_per_day
), dose AS (
    SELECT c.provider_id, coalesce(c.practitioner_id, x.practitioner_id) AS practitioner_id,
           c.person_key, c.service_date, c.claim_id, c.source_system, c.source_record_id,
           c.code, c.amount, coalesce(x.quantity, c.quantity) AS quantity,
           -- whole units: floor(max daily dose × days); the epsilon absorbs float error
           floor(t.max_daily_dose * greatest(coalesce(x.days_supply, 1), 1) + 1e-9) AS allowed,
           x.days_supply, 'dose_x_days' AS why
    FROM claims c
    JOIN tariffs t ON t.code = c.code
    LEFT JOIN dispensations x ON c.record_type = 'dispensation' AND x.dispensation_id = c.record_id
    WHERE c.kind = 'drug' AND t.max_daily_dose IS NOT NULL
      AND coalesce(x.quantity, c.quantity)
          > floor(t.max_daily_dose * greatest(coalesce(x.days_supply, 1), 1) + 1e-9)
), hits AS (
    SELECT * FROM units UNION ALL SELECT * FROM dose
)
SELECT provider_id, practitioner_id, person_key, service_date AS period_start,
       service_date AS period_end, [claim_id] AS item_ids,
       to_json([struct_pack(kind := 'claim', source_system := source_system,
                            source_record_id := source_record_id, claim_id := claim_id,
                            date := service_date, code := code, amount := amount,
                            quantity := quantity, allowed := allowed,
                            days_supply := days_supply)])::VARCHAR AS evidence,
       amount * (quantity - allowed) / quantity AS amount_at_risk,
       CASE WHEN quantity >= 2 * allowed THEN $likelihood_extreme ELSE $likelihood END
           AS likelihood,
       quantity / allowed AS score, why AS detail
FROM hits
