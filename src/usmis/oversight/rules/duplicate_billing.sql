-- duplicate_billing: one service billed more than once — the same linked person, service
-- code and date on several claim lines, by one billing system or by two (the second is
-- only visible once the person is linked across systems: each system knows the person
-- under its own id).  Codes whose tariff allows several units a day are left to
-- excess_units.  One line per group is genuine: for a lab test the one billed by the
-- laboratory that performed it, otherwise the first submitted (lowest claim id).  The
-- other lines are at risk.
WITH keys AS (
    -- cheap first pass on one 64-bit hash of (person, code, date): grouping by an integer
    -- is far faster than by three columns; a collision only adds a candidate that the
    -- exact second pass drops
    SELECT hash(c.person_key, c.code, c.service_date) AS h
    FROM claims c LEFT JOIN tariffs t ON t.code = c.code
    WHERE c.kind IN ('service', 'lab', 'stay') AND c.person_key IS NOT NULL
      AND coalesce(t.max_units_per_day, 1) <= 1
    GROUP BY h
    HAVING count(*) > 1
), ranked AS (
    SELECT c.*,
           row_number() OVER (
               PARTITION BY c.person_key, c.code, c.service_date
               ORDER BY CASE WHEN c.kind = 'lab' AND o.org_kind = 'lab' THEN 0 ELSE 1 END,
                        c.claim_id) AS rn,
           count(DISTINCT coalesce(c.billing_system, '')) OVER (
               PARTITION BY c.person_key, c.code, c.service_date) AS systems
    FROM claims c
    SEMI JOIN keys k ON k.h = hash(c.person_key, c.code, c.service_date)
    LEFT JOIN organizations o ON o.org_id = c.provider_id
    LEFT JOIN tariffs t ON t.code = c.code
    WHERE c.kind IN ('service', 'lab', 'stay') AND coalesce(t.max_units_per_day, 1) <= 1
), exact AS (
    SELECT * FROM ranked
    QUALIFY count(*) OVER (PARTITION BY person_key, code, service_date) > 1
), grp AS (
    SELECT person_key, code, service_date, any_value(systems) AS systems, count(*) AS n,
           list(claim_id ORDER BY claim_id) FILTER (WHERE rn > 1) AS ids,
           sum(amount) FILTER (WHERE rn > 1) AS at_risk,
           arg_min(provider_id, claim_id) FILTER (WHERE rn > 1) AS provider_id,
           arg_min(practitioner_id, claim_id) FILTER (WHERE rn > 1) AS practitioner_id,
           list(struct_pack(kind := 'claim', source_system := source_system,
                            source_record_id := source_record_id, claim_id := claim_id,
                            billing_system := billing_system, provider := provider_id,
                            date := service_date, code := code, amount := amount,
                            record_id := record_id, genuine := rn = 1)
                ORDER BY rn) AS ev
    FROM exact
    GROUP BY person_key, code, service_date
)
SELECT provider_id, practitioner_id, person_key, service_date AS period_start,
       service_date AS period_end, ids AS item_ids,
       to_json(ev)::VARCHAR AS evidence,
       at_risk AS amount_at_risk,
       CASE WHEN systems > 1 THEN $likelihood_across ELSE $likelihood_within END AS likelihood,
       n::DOUBLE AS score,
       CASE WHEN systems > 1 THEN 'across_systems' ELSE 'within_system' END AS detail
FROM grp
