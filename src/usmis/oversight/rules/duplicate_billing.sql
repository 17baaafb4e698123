-- duplicate_billing: one service billed more than once — the same linked person, provider,
-- service code and date on several claim lines, by one billing system or by two (the
-- second is only visible once the person is linked across systems).  Codes whose tariff
-- allows several units a day are left to excess_units.  The first line (lowest claim id)
-- is taken as the genuine one; the others are at risk.
WITH lines AS (
    SELECT c.*, coalesce(t.max_units_per_day, 1) AS max_units
    FROM claims c LEFT JOIN tariffs t ON t.code = c.code
    WHERE c.kind IN ('service', 'lab', 'stay')
), grp AS (
    SELECT person_key, provider_id, code, service_date,
           count(*) AS n, count(DISTINCT coalesce(billing_system, '')) AS systems,
           list(claim_id ORDER BY claim_id) AS ids,
           list(amount ORDER BY claim_id) AS amounts,
           mode(practitioner_id) AS practitioner_id,
           list(struct_pack(kind := 'claim', source_system := source_system,
                            source_record_id := source_record_id, claim_id := claim_id,
                            billing_system := billing_system, date := service_date,
                            code := code, amount := amount, record_id := record_id)
                ORDER BY claim_id) AS ev
    FROM lines
    WHERE max_units <= 1 AND person_key IS NOT NULL
    GROUP BY person_key, provider_id, code, service_date
    HAVING count(*) > 1
)
SELECT provider_id, practitioner_id, person_key, service_date AS period_start,
       service_date AS period_end,
       ids[2:] AS item_ids,
       to_json(ev)::VARCHAR AS evidence,
       list_sum(amounts[2:]) AS amount_at_risk,
       CASE WHEN systems > 1 THEN $likelihood_across ELSE $likelihood_within END AS likelihood,
       n::DOUBLE AS score,
       CASE WHEN systems > 1 THEN 'across_systems' ELSE 'within_system' END AS detail
FROM grp
