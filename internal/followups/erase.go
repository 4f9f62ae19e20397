package followups

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/patientmsg/gateway/internal/consent"
)

// Erase deletes the tenant's plans for a patient: those to any of the
// identities, or of the contact (contactID, "" for none). An active plan
// is canceled first, its steps' messages canceled with cancel as Stop
// does, so nothing more is sent; then the plan and its index entries go.
// It returns the ids of the plans deleted. Erasing again deletes nothing
// more; a plan another caller is stopping right now is an error, so the
// erasure is run again.
func (s *Store) Erase(ctx context.Context, tenant string, ids []consent.Identity, contactID string, cancel func(ctx context.Context, tenant, messageID, reason string) error) ([]string, error) {
	want := map[consent.Identity]bool{}
	for _, id := range ids {
		want[consent.Normalise(id)] = true
	}
	all, err := s.rdb.ZRange(ctx, tenantKey(tenant), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("followups: %w", err)
	}
	var erased []string
	for _, pid := range all {
		p, err := s.Get(ctx, tenant, pid)
		if errors.Is(err, ErrNotFound) {
			continue
		} else if err != nil {
			return erased, err
		}
		if !(contactID != "" && p.ContactID == contactID) && !slices.ContainsFunc(p.Identities, func(i consent.Identity) bool { return want[consent.Normalise(i)] }) {
			continue
		}
		if p.State == PlanActive {
			if _, err := s.Stop(ctx, tenant, pid, PlanCanceled, "the patient's data was erased", cancel); err != nil && !errors.Is(err, ErrNotActive) {
				return erased, err
			}
			if p, err = s.Get(ctx, tenant, pid); err != nil {
				return erased, err
			}
			if p.State == PlanActive {
				return erased, fmt.Errorf("followups: plan %s is still being stopped", pid)
			}
		}
		pipe := s.rdb.TxPipeline()
		pipe.Del(ctx, planKey(pid))
		pipe.ZRem(ctx, tenantKey(tenant), pid)
		if _, err := pipe.Exec(ctx); err != nil {
			return erased, fmt.Errorf("followups: %w", err)
		}
		for _, i := range p.Identities {
			_ = s.rdb.ZRem(ctx, identityKey(i), pid).Err() // only a hint, checked when read
		}
		erased = append(erased, pid)
	}
	return erased, nil
}
