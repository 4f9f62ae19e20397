package consent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// SourceReply is the source of an opt-out read from a patient's reply in
// other words than a keyword ("Stop texting me"): the evidence quotes them.
// SourceStaff is the source of one staff confirmed from a possible opt-out.
const (
	SourceReply = "reply"
	SourceStaff = "staff"
)

// ReviewDays is how many business days a clinic has to act on a possible
// opt-out (47 CFR 64.1200(a)(10): revocation is honoured within 10
// business days).
const ReviewDays = 10

// Deadline is when a possible opt-out received at t must be resolved: ten
// business days later (Saturdays and Sundays skipped; public holidays are
// not known, so the deadline is never later than the rule's).
func Deadline(t time.Time) time.Time {
	d := t.UTC()
	for n := 0; n < ReviewDays; {
		d = d.AddDate(0, 0, 1)
		if wd := d.Weekday(); wd != time.Saturday && wd != time.Sunday {
			n++
		}
	}
	return d
}

// Outcomes of a possible opt-out that staff resolved.
const (
	ResolvedOptedOut    = "opted_out"
	ResolvedNotAnOptOut = "not_an_opt_out"
)

// Errors of the possible opt-outs.
var (
	ErrPossibleNotFound = errors.New("consent: no possible opt-out with this id")
	ErrAlreadyResolved  = errors.New("consent: the possible opt-out is resolved already")
	ErrBadOutcome       = errors.New("consent: outcome must be opted_out or not_an_opt_out")
)

// PossibleOptOut is a reply that may be a wish to stop, for staff to
// resolve before its deadline.
type PossibleOptOut struct {
	// ID is the reply's id in the reply feed.
	ID         string    `json:"id"`
	Channel    string    `json:"channel"`
	From       Identity  `json:"from"`
	ReceivedAt time.Time `json:"received_at"`
	Deadline   time.Time `json:"deadline"`
	// InReplyTo is the message the reply answered.
	InReplyTo string `json:"in_reply_to,omitempty"`
	// Outcome is empty until staff resolve it; then opted_out or
	// not_an_opt_out, with when and by whom.
	Outcome    string    `json:"outcome,omitempty"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	ResolvedBy string    `json:"resolved_by,omitempty"`
}

// possibleKey holds a tenant's possible opt-outs by reply id (JSON), kept
// as evidence; openKey the unresolved ones, scored by deadline (unix ms).
func possibleKey(tenant string) string { return "gw:consent:{" + tenant + "}:possible" }
func openKey(tenant string) string     { return "gw:consent:{" + tenant + "}:possible:open" }

// clarifiedKey marks an identity that was asked to confirm with STOP.
func clarifiedKey(id Identity) string {
	sum := sha256.Sum256([]byte(id.String()))
	return "gw:consent:clarified:" + hex.EncodeToString(sum[:16])
}

// flagScript records a possible opt-out once. KEYS possible, open ARGV id,
// json, deadline_ms. Returns 1 when recorded, 0 when it was already.
var flagScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
`)

// FlagPossible records a possible opt-out for staff, once per reply id
// (a reply filed again adds nothing). It reports whether it was new.
func (l *Ledger) FlagPossible(ctx context.Context, tenant string, p PossibleOptOut) (bool, error) {
	p.Outcome, p.ResolvedAt, p.ResolvedBy = "", time.Time{}, ""
	b, _ := json.Marshal(p)
	n, err := flagScript.Run(ctx, l.rdb, []string{possibleKey(tenant), openKey(tenant)}, p.ID, b, p.Deadline.UnixMilli()).Int()
	return n == 1, err
}

// ClarifyOnce says whether an identity should be asked to confirm a
// possible opt-out with STOP: once in the review period, however many
// ambiguous replies it sends (the number is shared by every tenant, so
// the mark is too).
func (l *Ledger) ClarifyOnce(ctx context.Context, id Identity) (bool, error) {
	return l.rdb.SetNX(ctx, clarifiedKey(id), 1, 14*24*time.Hour).Result()
}

// PossibleOptOuts lists a tenant's unresolved possible opt-outs, nearest
// deadline first, up to limit.
func (l *Ledger) PossibleOptOuts(ctx context.Context, tenant string, limit int) ([]PossibleOptOut, error) {
	ids, err := l.rdb.ZRange(ctx, openKey(tenant), 0, int64(limit-1)).Result()
	if err != nil || len(ids) == 0 {
		return []PossibleOptOut{}, err
	}
	raws, err := l.rdb.HMGet(ctx, possibleKey(tenant), ids...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]PossibleOptOut, 0, len(raws))
	for _, raw := range raws {
		s, _ := raw.(string)
		var p PossibleOptOut
		if json.Unmarshal([]byte(s), &p) == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// ResolvePossible records staff's decision on a possible opt-out: opted_out
// opts the identity out for this tenant (source staff, the flag as
// evidence); not_an_opt_out leaves consent as it is. changed says whether
// consent changed. A flag is resolved once.
func (l *Ledger) ResolvePossible(ctx context.Context, tenant, id, outcome, by string) (p PossibleOptOut, changed bool, err error) {
	if outcome != ResolvedOptedOut && outcome != ResolvedNotAnOptOut {
		return p, false, ErrBadOutcome
	}
	raw, err := l.rdb.HGet(ctx, possibleKey(tenant), id).Result()
	if errors.Is(err, redis.Nil) {
		return p, false, ErrPossibleNotFound
	}
	if err != nil {
		return p, false, err
	}
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return p, false, ErrPossibleNotFound
	}
	if p.Outcome != "" {
		return p, false, ErrAlreadyResolved
	}
	if outcome == ResolvedOptedOut {
		// Consent first: a failure after it leaves the flag open to resolve
		// again, and a second Set changes nothing.
		evidence := "possible opt-out " + id + " confirmed by staff"
		if by != "" {
			evidence += " (" + by + ")"
		}
		if changed, err = l.Set(ctx, tenant, p.From, true, SourceStaff, evidence); err != nil {
			return p, false, err
		}
	}
	n, err := l.rdb.ZRem(ctx, openKey(tenant), id).Result()
	if err != nil {
		return p, changed, err
	}
	if n == 0 {
		return p, changed, ErrAlreadyResolved
	}
	p.Outcome, p.ResolvedAt, p.ResolvedBy = outcome, l.now().UTC(), by
	b, _ := json.Marshal(p)
	return p, changed, l.rdb.HSet(ctx, possibleKey(tenant), id, b).Err()
}
