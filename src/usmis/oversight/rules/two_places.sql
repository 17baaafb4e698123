-- two_places: a patient cannot be in two places.  (a) Outpatient services billed on a day
-- strictly inside an inpatient stay (admission and discharge days are excluded: a morning
-- consultation before admission or after discharge is real).  (b) Overlapping stays: a
-- second stay admitted before the first one's discharge; a readmission on the day of
-- discharge is not an overlap.  Stays come from the stays table; their claims are the
-- claim lines whose record_type is 'stay'.
WITH stay AS (
    SELECT s.*, c.claim_id AS stay_claim, c.amount AS stay_amount,
           c.provider_id AS stay_provider
    FROM stays s
    LEFT JOIN (SELECT * FROM claims WHERE kind = 'stay' AND record_type = 'stay') c
           ON c.record_id = s.stay_id
), outpatient AS (
    SELECT c.provider_id, c.practitioner_id, c.person_key, c.service_date, c.service_date AS d2,
           [c.claim_id] AS item_ids, c.amount,
           [struct_pack(kind := 'claim', source_system := c.source_system,
                        source_record_id := c.source_record_id, claim_id := c.claim_id,
                        date := c.service_date, end_date := NULL::DATE, code := c.code,
                        amount := c.amount),
            struct_pack(kind := 'stay', source_system := s.source_system,
                        source_record_id := s.source_record_id, claim_id := s.stay_claim,
                        date := s.admit_date, end_date := s.discharge_date,
                        code := s.case_group, amount := s.stay_amount)] AS ev,
           'outpatient_during_stay' AS detail
    FROM claims c
    -- only people with a stay can be in two places: a cheap semi join first
    SEMI JOIN (SELECT DISTINCT person_key FROM stays) sp ON sp.person_key = c.person_key
    JOIN stay s ON s.person_key = c.person_key
               AND c.service_date > s.admit_date AND c.service_date < s.discharge_date
    WHERE c.kind IN ('service', 'lab') AND c.record_type IS DISTINCT FROM 'stay'
    QUALIFY row_number() OVER (PARTITION BY c.claim_id ORDER BY s.admit_date) = 1
), overlap AS (
    -- b is the later stay (ties broken by id); it is the one at risk.
    SELECT coalesce(b.stay_provider, b.org_id) AS provider_id, NULL::VARCHAR AS practitioner_id,
           b.person_key, b.admit_date AS service_date, b.discharge_date AS d2,
           [b.stay_claim] AS item_ids, b.stay_amount AS amount,
           [struct_pack(kind := 'stay', source_system := a.source_system,
                        source_record_id := a.source_record_id, claim_id := a.stay_claim,
                        date := a.admit_date, end_date := a.discharge_date,
                        code := a.case_group, amount := a.stay_amount),
            struct_pack(kind := 'stay', source_system := b.source_system,
                        source_record_id := b.source_record_id, claim_id := b.stay_claim,
                        date := b.admit_date, end_date := b.discharge_date,
                        code := b.case_group, amount := b.stay_amount)] AS ev,
           'overlapping_stays' AS detail
    FROM stay a JOIN stay b
      ON a.person_key = b.person_key AND a.stay_id <> b.stay_id
     AND (b.admit_date > a.admit_date OR (b.admit_date = a.admit_date AND b.stay_id > a.stay_id))
     AND b.admit_date < a.discharge_date
    WHERE b.stay_claim IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY b.stay_id ORDER BY a.admit_date) = 1
), hits AS (
    SELECT * FROM outpatient UNION ALL SELECT * FROM overlap
)
SELECT provider_id, practitioner_id, person_key, service_date AS period_start,
       d2 AS period_end, item_ids, to_json(ev)::VARCHAR AS evidence,
       amount AS amount_at_risk,
       CASE detail WHEN 'overlapping_stays' THEN $likelihood_overlap ELSE $likelihood END
           AS likelihood,
       1.0 AS score, detail
FROM hits
