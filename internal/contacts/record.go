package contacts

import (
	"context"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/webhooks"
)

// Publisher tells a tenant's webhook of an event (a *webhooks.Publisher;
// nil: nobody is told).
type Publisher interface {
	Publish(ctx context.Context, tenant, typ string, data any, callbackURL string)
}

// RecordConsent records a choice the clinic reports for a patient (opted
// out, or opted in again), with its evidence, on each of the contact's
// addresses of the kind (all of them when kind is ""), and tells the
// clinic's webhook of each address whose state changed. The consent
// ledger's rules apply; the API and the console both record through here.
// It returns the addresses that changed.
func RecordConsent(ctx context.Context, led *consent.Ledger, pub Publisher, tenant string, ct Contact, kind consent.Kind,
	optedOut bool, evidence string) ([]consent.Identity, error) {
	var changed []consent.Identity
	for _, id := range ct.Identities {
		if kind != "" && id.Kind != kind {
			continue
		}
		ok, err := led.Set(ctx, tenant, id, optedOut, consent.SourceAPI, evidence)
		if err != nil {
			return changed, err
		}
		if !ok {
			continue
		}
		changed = append(changed, id)
		if pub == nil {
			continue
		}
		typ := webhooks.ContactOptedIn
		if optedOut {
			typ = webhooks.ContactOptedOut
		}
		pub.Publish(ctx, tenant, typ, map[string]any{"contact": ct.ID, "identity": id, "source": consent.SourceAPI}, "")
	}
	return changed, nil
}

// ResolvePossible records staff's decision on a possible opt-out
// (consent.ResolvedOptedOut or consent.ResolvedNotAnOptOut, by whom) and,
// when it opted the patient out, tells the clinic's webhook. The API and
// the console both resolve through here.
func ResolvePossible(ctx context.Context, led *consent.Ledger, pub Publisher, tenant, id, outcome, by string) (consent.PossibleOptOut, error) {
	p, changed, err := led.ResolvePossible(ctx, tenant, id, outcome, by)
	if err != nil {
		return p, err
	}
	if changed && pub != nil {
		pub.Publish(ctx, tenant, webhooks.ContactOptedOut, map[string]any{"identity": p.From, "source": consent.SourceStaff, "possible_opt_out": p.ID}, "")
	}
	return p, nil
}
