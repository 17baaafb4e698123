-- upcoding: a provider whose share of expensive case groups is far above its peers'.
-- Statistical, with shrinkage: each provider's share is estimated by empirical Bayes — a
-- beta prior fitted to every provider billing case groups by the (case-weighted) method of
-- moments, updated with the provider's own counts — so a small provider with a few
-- expensive cases is pulled toward the peers and does not fire.  No provider is left out
-- of the fit or of the scoring for being small: shrinkage, not a cut-off, handles size (a
-- fit over large providers only sees no spread between providers and shrinks a small
-- upcoder to nothing).  The peer share is the median share of providers with at least
-- $min_cases cases.  It fires when the shrunk share exceeds the peer share by $min_excess
-- and by $z_min posterior standard deviations.
WITH lines AS (
    SELECT c.provider_id, c.claim_id, c.service_date, c.amount, c.source_system,
           c.source_record_id, c.code, coalesce(t.expensive, false) AS expensive
    FROM claims c JOIN tariffs t ON t.code = c.code
    WHERE t.kind = 'case_group'
), prov AS (
    SELECT provider_id, count(*) AS n, count(*) FILTER (WHERE expensive) AS k,
           coalesce(sum(amount) FILTER (WHERE expensive), 0) AS sum_exp
    FROM lines GROUP BY provider_id
), peer AS (
    SELECT median(k::DOUBLE / n) FILTER (WHERE n >= $min_cases) AS m,
           sum(k)::DOUBLE / sum(n) AS pooled,
           count(*) FILTER (WHERE n >= $min_cases) AS providers,
           count(*) AS fitted, sum(n)::DOUBLE AS sn, sum(n * n)::DOUBLE AS sn2
    FROM prov
), prior AS (
    -- method of moments for the beta-binomial, each provider weighted by its cases:
    -- between-provider variance = (sum n (share - pooled)^2 - binomial part) / effective n
    SELECT r.m, r.providers, r.pooled,
           least(greatest(r.pooled * (1 - r.pooled)
                          / greatest((sum(p.n * (p.k::DOUBLE / p.n - r.pooled) ^ 2)
                                      - r.pooled * (1 - r.pooled) * (r.fitted - 1))
                                     / nullif(r.sn - r.sn2 / r.sn, 0), 1e-6) - 1, 2),
                 1e4) AS ab
    FROM prov p CROSS JOIN peer r
    GROUP BY r.m, r.providers, r.pooled, r.fitted, r.sn, r.sn2
), scored AS (
    SELECT p.*, r.m, r.ab, r.providers,
           (p.k + r.pooled * r.ab) / (p.n + r.ab) AS shrunk
    FROM prov p CROSS JOIN prior r
    WHERE r.providers >= $min_peers
), flagged AS (
    SELECT *, sqrt(shrunk * (1 - shrunk) / (n + ab + 1)) AS sd,
           (shrunk - m) / nullif(sqrt(shrunk * (1 - shrunk) / (n + ab + 1)), 0) AS z,
           -- the payment for the expensive cases beyond the peer share
           CASE WHEN k > 0 THEN greatest(sum_exp * (1 - n * m / k), 0) ELSE 0 END AS at_risk
    FROM scored
    WHERE shrunk - m >= $min_excess
      AND (shrunk - m) / nullif(sqrt(shrunk * (1 - shrunk) / (n + ab + 1)), 0) >= $z_min
)
SELECT f.provider_id, NULL::VARCHAR AS practitioner_id, NULL::VARCHAR AS person_key,
       min(l.service_date) AS period_start, max(l.service_date) AS period_end,
       list(l.claim_id ORDER BY l.claim_id) AS item_ids,
       to_json(struct_pack(cases := any_value(f.n), expensive_cases := any_value(f.k),
                           provider_share := any_value(f.k)::DOUBLE / any_value(f.n),
                           shrunk_share := any_value(f.shrunk),
                           peer_median_share := any_value(f.m),
                           prior_strength := any_value(f.ab), z := any_value(f.z),
                           sample_claims := list(struct_pack(
                               source_system := l.source_system,
                               source_record_id := l.source_record_id, claim_id := l.claim_id,
                               date := l.service_date, code := l.code, amount := l.amount)
                               ORDER BY l.claim_id)[1:$evidence_rows]))::VARCHAR AS evidence,
       any_value(f.at_risk) AS amount_at_risk,
       -- logistic approximation of the normal CDF of z
       1 / (1 + exp(-1.702 * (any_value(f.z) - $z_min))) AS likelihood,
       any_value(f.z) AS score,
       'expensive_share' AS detail
FROM flagged f JOIN lines l ON l.provider_id = f.provider_id AND l.expensive
GROUP BY f.provider_id
