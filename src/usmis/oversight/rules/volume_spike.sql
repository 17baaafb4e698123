-- volume_spike: a provider's monthly billing jumping far above its own history and its
-- peers.  Own history: the median of its previous $history_months months (at least
-- $min_history of them).  Peers: providers of the same kind in the same month — their
-- median growth is what the season explains.  Fires when the provider's log growth is
-- $z_min robust standard deviations (1.4826 × MAD) above the peers' median growth, the
-- growth ratio exceeds $min_ratio × the peers' and the excess is material.
WITH monthly AS (
    SELECT c.provider_id, date_trunc('month', c.service_date)::DATE AS month,
           sum(c.amount) AS amount, count(*) AS lines
    FROM claims c
    WHERE c.service_date <= $as_of::DATE
    GROUP BY ALL
), hist AS (
    SELECT m.*, o.org_kind,
           median(amount) OVER w AS baseline,
           count(*) OVER w AS history
    FROM monthly m LEFT JOIN organizations o ON o.org_id = m.provider_id
    WINDOW w AS (PARTITION BY m.provider_id ORDER BY month
                 ROWS BETWEEN $history_months PRECEDING AND 1 PRECEDING)
), growth AS (
    SELECT *, ln(amount / baseline) AS g FROM hist
    WHERE history >= $min_history AND baseline > 0 AND amount > 0
), peers AS (
    SELECT org_kind, month, median(g) AS peer_g,
           1.4826 * median(abs(g - (SELECT median(g2.g) FROM growth g2
                                    WHERE g2.org_kind IS NOT DISTINCT FROM growth.org_kind
                                      AND g2.month = growth.month))) AS mad
    FROM growth GROUP BY org_kind, month
), flagged AS (
    SELECT g.*, p.peer_g, (g.g - p.peer_g) / greatest(p.mad, $min_mad) AS z,
           g.amount - g.baseline * exp(p.peer_g) AS excess
    FROM growth g JOIN peers p ON p.org_kind IS NOT DISTINCT FROM g.org_kind AND p.month = g.month
    WHERE (g.g - p.peer_g) / greatest(p.mad, $min_mad) >= $z_min
      AND g.g - p.peer_g >= ln($min_ratio)
      AND g.amount - g.baseline * exp(p.peer_g) >= $min_excess_amount
)
SELECT f.provider_id, NULL::VARCHAR AS practitioner_id, NULL::VARCHAR AS person_key,
       f.month AS period_start, last_day(f.month) AS period_end,
       list(c.claim_id ORDER BY c.claim_id) AS item_ids,
       to_json(struct_pack(month := f.month, amount := any_value(f.amount),
                           lines := any_value(f.lines), baseline := any_value(f.baseline),
                           history_months := any_value(f.history),
                           peer_growth := exp(any_value(f.peer_g)),
                           growth := exp(any_value(f.g)), z := any_value(f.z)))::VARCHAR
           AS evidence,
       any_value(f.excess) AS amount_at_risk,
       1 / (1 + exp(-1.702 * (any_value(f.z) - $z_min))) * $likelihood_cap AS likelihood,
       any_value(f.z) AS score,
       'monthly_spike' AS detail
FROM flagged f
JOIN claims c ON c.provider_id = f.provider_id
             AND c.service_date >= f.month AND c.service_date <= last_day(f.month)
GROUP BY f.provider_id, f.month
