-- upcoding: a provider whose share of expensive case groups (within a family of case groups
-- a coder chooses between) is far above its peers'.  Statistical, with shrinkage: each
-- provider's share is estimated by empirical Bayes — a beta prior fitted to all providers of
-- the family by the method of moments, updated with the provider's own counts — so a small
-- provider with a few expensive cases is pulled toward the peers and does not fire.  It
-- fires when the shrunk share exceeds the peers' share (pooled, leaving the provider out)
-- by $min_excess and by $z_min posterior standard deviations.
WITH lines AS (
    SELECT c.provider_id, c.claim_id, c.service_date, c.amount, c.source_system,
           c.source_record_id, c.practitioner_id, c.person_key,
           t.case_family, coalesce(t.expensive, false) AS expensive, c.code
    FROM claims c JOIN tariffs t ON t.code = c.code
    WHERE t.kind = 'case_group' AND t.case_family IS NOT NULL
), prices AS (
    SELECT case_family,
           avg(price) FILTER (WHERE coalesce(expensive, false)) -
           avg(price) FILTER (WHERE NOT coalesce(expensive, false)) AS uplift
    FROM tariffs WHERE kind = 'case_group' AND case_family IS NOT NULL GROUP BY case_family
), prov AS (
    SELECT provider_id, case_family, count(*) AS n,
           count(*) FILTER (WHERE expensive) AS k
    FROM lines GROUP BY provider_id, case_family
), fam AS (
    SELECT case_family, sum(n) AS big_n, sum(k) AS big_k, count(*) AS providers,
           sum(k)::DOUBLE / sum(n) AS m,
           -- between-provider variance of shares, minus the binomial noise part
           greatest(var_pop(k::DOUBLE / n) FILTER (WHERE n >= $min_cases)
                    - (sum(k)::DOUBLE / sum(n)) * (1 - sum(k)::DOUBLE / sum(n))
                      * avg(1.0 / n) FILTER (WHERE n >= $min_cases), 1e-6) AS tau2
    FROM prov GROUP BY case_family
), post AS (
    SELECT p.*, f.providers,
           (f.big_k - p.k)::DOUBLE / nullif(f.big_n - p.n, 0) AS peer_share,
           -- prior strength a+b from the method of moments, bounded to stay sane
           least(greatest(f.m * (1 - f.m) / f.tau2 - 1, 2), 1e4) AS ab,
           f.m
    FROM prov p JOIN fam f USING (case_family)
    WHERE f.providers >= $min_peers
), scored AS (
    SELECT *,
           (k + m * ab) / (n + ab) AS shrunk,
           sqrt(((k + m * ab) / (n + ab)) * (1 - (k + m * ab) / (n + ab)) / (n + ab + 1)) AS sd
    FROM post
), flagged AS (
    SELECT s.*, (shrunk - peer_share) / nullif(sd, 0) AS z,
           greatest(k - n * peer_share, 0) * coalesce(pr.uplift, 0) AS at_risk
    FROM scored s LEFT JOIN prices pr USING (case_family)
    WHERE n >= $min_cases AND shrunk - peer_share >= $min_excess
      AND (shrunk - peer_share) / nullif(sd, 0) >= $z_min
)
SELECT f.provider_id, NULL::VARCHAR AS practitioner_id, NULL::VARCHAR AS person_key,
       min(l.service_date) AS period_start, max(l.service_date) AS period_end,
       list(l.claim_id ORDER BY l.claim_id) AS item_ids,
       to_json(struct_pack(case_family := f.case_family, cases := any_value(f.n),
                           expensive_cases := any_value(f.k),
                           provider_share := any_value(f.k)::DOUBLE / any_value(f.n),
                           shrunk_share := any_value(f.shrunk),
                           peer_share := any_value(f.peer_share), z := any_value(f.z),
                           sample_claims := list(struct_pack(
                               source_system := l.source_system,
                               source_record_id := l.source_record_id, claim_id := l.claim_id,
                               date := l.service_date, code := l.code, amount := l.amount)
                               ORDER BY l.claim_id)[1:$evidence_rows]))::VARCHAR AS evidence,
       any_value(f.at_risk) AS amount_at_risk,
       -- logistic approximation of the normal CDF of z
       1 / (1 + exp(-1.702 * (any_value(f.z) - $z_min))) AS likelihood,
       any_value(f.z) AS score,
       'case_family:' || f.case_family AS detail
FROM flagged f JOIN lines l ON l.provider_id = f.provider_id
                            AND l.case_family = f.case_family AND l.expensive
GROUP BY f.provider_id, f.case_family
