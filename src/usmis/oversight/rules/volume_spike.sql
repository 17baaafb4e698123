-- volume_spike: a provider's monthly outpatient billing jumping far above its own history
-- and its peers.  Own history: the median of the provider's other months in the window
-- (at least $min_history of them).  Peers: providers of the same kind in the same month —
-- their median growth is what the season explains.  Fires when the provider's log growth
-- is $z_min robust standard deviations (1.4826 × MAD) above the peers' median growth, at
-- least $min_ratio × its own median, and the excess is material.  The excess over its own
-- median month is at risk.
WITH monthly AS (
    SELECT c.provider_id, date_trunc('month', c.service_date)::DATE AS month,
           sum(c.amount) AS amount, count(*) AS lines
    FROM claims c
    WHERE c.service_date <= $as_of::DATE AND c.kind IN ('service', 'lab')
    GROUP BY ALL
), hist AS (
    SELECT m.provider_id, m.month, any_value(m.amount) AS amount, any_value(m.lines) AS lines,
           median(o.amount) AS baseline, count(o.month) AS history
    FROM monthly m JOIN monthly o ON o.provider_id = m.provider_id AND o.month <> m.month
    GROUP BY m.provider_id, m.month
), growth AS (
    SELECT h.*, org.org_kind, ln(h.amount / h.baseline) AS g
    FROM hist h LEFT JOIN organizations org ON org.org_id = h.provider_id
    WHERE h.history >= $min_history AND h.baseline > 0 AND h.amount > 0
), peer_mid AS (
    SELECT org_kind, month, median(g) AS peer_g FROM growth GROUP BY org_kind, month
), peers AS (
    SELECT g.org_kind, g.month, any_value(p.peer_g) AS peer_g,
           1.4826 * median(abs(g.g - p.peer_g)) AS mad, count(*) AS n_peers
    FROM growth g JOIN peer_mid p ON p.org_kind IS NOT DISTINCT FROM g.org_kind
                                  AND p.month = g.month
    GROUP BY g.org_kind, g.month
), flagged AS (
    SELECT g.*, p.peer_g, p.n_peers, (g.g - p.peer_g) / greatest(p.mad, $min_mad) AS z,
           g.amount - g.baseline AS excess
    FROM growth g JOIN peers p ON p.org_kind IS NOT DISTINCT FROM g.org_kind
                               AND p.month = g.month
    WHERE (g.g - p.peer_g) / greatest(p.mad, $min_mad) >= $z_min
      AND g.g >= ln($min_ratio)
      AND g.amount - g.baseline >= $min_excess_amount
)
SELECT f.provider_id, NULL::VARCHAR AS practitioner_id, NULL::VARCHAR AS person_key,
       f.month AS period_start, last_day(f.month) AS period_end,
       list(c.claim_id ORDER BY c.claim_id) AS item_ids,
       to_json(struct_pack(month := f.month, amount := any_value(f.amount),
                           lines := any_value(f.lines), baseline := any_value(f.baseline),
                           other_months := any_value(f.history),
                           peers := any_value(f.n_peers),
                           peer_growth := exp(any_value(f.peer_g)),
                           growth := exp(any_value(f.g)), z := any_value(f.z)))::VARCHAR
           AS evidence,
       any_value(f.excess) AS amount_at_risk,
       1 / (1 + exp(-1.702 * (any_value(f.z) - $z_min))) * $likelihood_cap AS likelihood,
       any_value(f.z) AS score,
       'monthly_spike' AS detail
FROM flagged f
JOIN claims c ON c.provider_id = f.provider_id AND c.kind IN ('service', 'lab')
             AND c.service_date >= f.month AND c.service_date <= last_day(f.month)
GROUP BY f.provider_id, f.month
