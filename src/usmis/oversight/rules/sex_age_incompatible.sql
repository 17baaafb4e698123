-- sex_age_incompatible: services the tariff restricts to one sex or an age band, billed for
-- someone outside it.  Only birth year and month are in the extract, so age is a range:
-- it fires only when every possible birth day puts the person outside the band (no false
-- alarm on a birthday month).  A linked person's sources may disagree (a typo in the sex,
-- a swapped day and month in the birth date): the range spans every source's birth month,
-- and the sex counts only when all sources give the same one.
WITH lines AS (
    SELECT c.*, t.sex AS t_sex, t.min_age, t.max_age,
           CASE WHEN p.sexes = 1 THEN p.sex END AS p_sex, p.birth_year,
           -- completed years if born on the last day of the latest possible birth month /
           -- on the first day of the earliest one
           year(c.service_date) - p.birth_last // 12
             - CASE WHEN month(c.service_date) <= p.birth_last % 12 + 1 THEN 1 ELSE 0 END
             AS age_lo,
           year(c.service_date) - p.birth_first // 12
             - CASE WHEN month(c.service_date) < p.birth_first % 12 + 1 THEN 1 ELSE 0 END
             AS age_hi
    FROM claims c
    JOIN tariffs t ON t.code = c.code
    JOIN person_facts p USING (person_key)
    WHERE t.sex IS NOT NULL OR t.min_age IS NOT NULL OR t.max_age IS NOT NULL
), hits AS (
    SELECT *,
           CASE WHEN t_sex IS NOT NULL AND p_sex IS NOT NULL AND p_sex <> t_sex THEN 'sex'
                WHEN min_age IS NOT NULL AND age_hi < min_age THEN 'too_young'
                WHEN max_age IS NOT NULL AND age_lo > max_age THEN 'too_old'
           END AS why
    FROM lines WHERE p_sex IS NOT NULL OR birth_year IS NOT NULL
)
SELECT provider_id, practitioner_id, person_key, service_date AS period_start,
       service_date AS period_end, [claim_id] AS item_ids,
       to_json([struct_pack(kind := 'claim', source_system := source_system,
                            source_record_id := source_record_id, claim_id := claim_id,
                            date := service_date, code := code, amount := amount,
                            person_sex := p_sex, age_from := age_lo, age_to := age_hi,
                            allowed_sex := t_sex, min_age := min_age, max_age := max_age)])::VARCHAR
           AS evidence,
       amount AS amount_at_risk,
       CASE why WHEN 'sex' THEN $likelihood_sex ELSE $likelihood_age END AS likelihood,
       1.0 AS score, why AS detail
FROM hits WHERE why IS NOT NULL
