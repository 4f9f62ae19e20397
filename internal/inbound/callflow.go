package inbound

import (
	"context"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// CallFlows run interactive calls (package questionnaires' Service asks
// a questionnaire by voice).
type CallFlows interface {
	CallStep(ctx context.Context, m *ledger.Message, step string, a *ledger.Answer) (channels.CallStep, bool, error)
}

// CallStep makes the Receiver a channels.CallFlow: a call is interactive
// when its questionnaire says so; any other call plays as its message says.
func (r *Receiver) CallStep(ctx context.Context, m *ledger.Message, step string, a *ledger.Answer) (channels.CallStep, bool, error) {
	if f, ok := r.Questionnaires.(CallFlows); ok && f != nil {
		return f.CallStep(ctx, m, step, a)
	}
	return channels.CallStep{}, false, nil
}

var _ channels.CallFlow = (*Receiver)(nil)
