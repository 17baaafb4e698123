-- volume_spike: a provider's monthly outpatient billing jumping far above its own history
-- and its peers.  Own history: the median of the provider's other months in the window
-- (at least $min_history of them).  Peers: providers of the same kind in the same month —
-- their median growth is what the season explains.  Fires when the provider's log growth
-- is $z_min robust standard deviations (1.4826 × MAD) above the peers' median growth, at
-- least $min_ratio × its own median, and the excess is material.  The excess over its own
-- median month is at risk.  A month carried by a single day does not count (that is
-- impossible_day's finding).
WITH daily AS (
    SELECT c.provider_id, c.service_date, sum(c.amount) AS amount, count(*) AS lines
    FROM claims c
    WHERE c.service_date <= $as_of::DATE AND c.kind IN ('service', 'lab')
    GROUP BY ALL
), monthly AS (
    SELECT provider_id, date_trunc('month', service_date)::DATE AS month,
           sum(amount) AS amount, sum(lines) AS lines, max(amount) AS top_day
    FROM daily
    GROUP BY ALL
), hist AS (
    SELECT m.provider_id, m.month, any_value(m.amount) AS amount, any_value(m.lines) AS lines,
           any_value(m.top_day) AS top_day, median(o.amount) AS baseline,
           count(o.month) AS history
    FROM monthly m JOIN monthly o ON o.provider_id = m.provider_id AND o.month <> m.month
    GROUP BY m.provider_id, m.month
), growth AS (
    SELECT h.*, org.org_kind, ln(h.amount / h.baseline) AS g
    FROM hist h LEFT JOIN organizations org ON org.org_id = h.provider_id
    WHERE h.history >= $min_history AND h.baseline > 0 AND h.amount > 0
), peer_mid AS (
    -- Leave-one-out: the provider's own month is not part of its peers' norm (with a
    -- handful of peers a spike would otherwise inflate the spread it is measured against).
    SELECT g.provider_id, g.month, median(o.g) AS peer_g, count(*) AS n_peers
    FROM growth g JOIN growth o ON o.org_kind IS NOT DISTINCT FROM g.org_kind
                                AND o.month = g.month AND o.provider_id <> g.provider_id
    GROUP BY g.provider_id, g.month
), peers AS (
    SELECT p.provider_id, p.month, any_value(p.peer_g) AS peer_g,
           any_value(p.n_peers) AS n_peers, 1.4826 * median(abs(o.g - p.peer_g)) AS mad
    FROM peer_mid p
    JOIN growth g ON g.provider_id = p.provider_id AND g.month = p.month
    JOIN growth o ON o.org_kind IS NOT DISTINCT FROM g.org_kind
                  AND o.month = p.month AND o.provider_id <> p.provider_id
    GROUP BY p.provider_id, p.month
), flagged AS (
    SELECT g.*, p.peer_g, p.n_peers, (g.g - p.peer_g) / greatest(p.mad, $min_mad) AS z,
           g.amount - g.baseline AS excess
    FROM growth g JOIN peers p ON p.provider_id = g.provider_id AND p.month = g.month
    WHERE (g.g - p.peer_g) / greatest(p.mad, $min_mad) >= $z_min
      AND g.g >= ln($min_ratio)
      AND g.amount - g.baseline >= $min_excess_amount
      -- A spike is sustained volume: it must hold without the month's busiest day.  One
      -- extreme day is impossible_day's finding and is not counted twice here.
      AND g.amount - g.top_day >= $min_ratio * g.baseline
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
