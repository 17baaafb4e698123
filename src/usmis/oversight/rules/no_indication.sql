-- no_indication: drugs dispensed to someone with no diagnosis that indicates them.  A drug
-- is checked only if the indications table lists it (by ATC prefix); any diagnosis of the
-- linked person, from any system, dated up to $grace_days after the dispensation counts
-- (a diagnosis is often recorded a little after the prescription).
WITH drug_lines AS (
    SELECT c.*, coalesce(x.atc, c.code) AS atc_code,
           coalesce(x.practitioner_id, c.practitioner_id) AS prescriber
    FROM claims c
    LEFT JOIN dispensations x ON c.record_type = 'dispensation' AND x.dispensation_id = c.record_id
    WHERE c.kind = 'drug'
), checked AS (
    SELECT DISTINCT l.claim_id
    FROM drug_lines l JOIN indications i ON starts_with(l.atc_code, i.atc)
), indicated AS (
    SELECT DISTINCT l.claim_id
    FROM drug_lines l
    JOIN indications i ON starts_with(l.atc_code, i.atc)
    JOIN diagnoses g ON g.person_key = l.person_key
                    AND starts_with(g.icd10, i.icd10_prefix)
                    AND g.diagnosis_date <= l.service_date + to_days($grace_days)
)
SELECT l.provider_id, l.prescriber AS practitioner_id, l.person_key,
       l.service_date AS period_start, l.service_date AS period_end, [l.claim_id] AS item_ids,
       to_json([struct_pack(kind := 'claim', source_system := l.source_system,
                            source_record_id := l.source_record_id, claim_id := l.claim_id,
                            date := l.service_date, code := l.atc_code, amount := l.amount,
                            record_id := l.record_id)])::VARCHAR AS evidence,
       l.amount AS amount_at_risk, $likelihood AS likelihood, 1.0 AS score,
       'no_indicating_diagnosis' AS detail
FROM drug_lines l
JOIN checked USING (claim_id)
ANTI JOIN indicated USING (claim_id)
