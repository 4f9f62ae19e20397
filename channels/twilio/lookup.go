package twilio

import (
	"context"
	"strconv"
	"time"

	twiliogo "github.com/twilio/twilio-go"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// maxFound bounds the messages one lookup reads.
const maxFound = 100

// Find implements channels.Finder: the SIDs of the messages Twilio holds
// to m's number, from this sender, with m's body, created at or after
// since, newest first. An attempt that timed out after its request was
// written may have created one of them.
func (s *SMS) Find(ctx context.Context, m channels.Message, since time.Time) ([]string, error) {
	tr := &callTransport{base: s.cfg.Transport, target: s.target, ctx: ctx}
	rc := twiliogo.NewRestClientWithParams(twiliogo.ClientParams{Client: s.client(tr)})
	// DateSent filters by GMT day: the day before since covers a send
	// created just before midnight and sent after it.
	day := since.UTC().Add(-24 * time.Hour).Truncate(24 * time.Hour)
	params := &openapi.ListMessageParams{}
	params.SetTo(m.To.Phone).SetDateSentAfter(day).SetPageSize(maxFound).SetLimit(maxFound)
	if s.cfg.MessagingServiceSID == "" {
		params.SetFrom(s.cfg.From)
	}
	list, err := rc.Api.ListMessage(params)
	if err != nil {
		return nil, classify(err, tr)
	}
	var out []string
	for _, msg := range list {
		if msg.Sid == nil || msg.Body == nil || *msg.Body != m.Body || msg.DateCreated == nil {
			continue
		}
		if s.cfg.MessagingServiceSID != "" && (msg.MessagingServiceSid == nil || *msg.MessagingServiceSid != s.cfg.MessagingServiceSID) {
			continue
		}
		created, err := time.Parse(time.RFC1123Z, *msg.DateCreated)
		if err != nil || created.Before(since.Add(-time.Second)) {
			continue
		}
		out = append(out, *msg.Sid)
	}
	return out, nil
}

// Report implements channels.Reporter: the message's status as Twilio
// holds it now, as its status callback would have said it.
func (s *SMS) Report(ctx context.Context, providerID string) (ledger.ProviderUpdate, error) {
	tr := &callTransport{base: s.cfg.Transport, target: s.target, ctx: ctx}
	rc := twiliogo.NewRestClientWithParams(twiliogo.ClientParams{Client: s.client(tr)})
	msg, err := rc.Api.FetchMessage(providerID, &openapi.FetchMessageParams{})
	if err != nil {
		return ledger.ProviderUpdate{}, classify(err, tr)
	}
	u := ledger.ProviderUpdate{Channel: s.Name(), ProviderID: providerID}
	if msg.Status != nil {
		u.ProviderStatus = *msg.Status
		u.Status = providerStatuses[*msg.Status]
	}
	if msg.ErrorCode != nil && *msg.ErrorCode != 0 {
		u.ErrorCode = strconv.Itoa(*msg.ErrorCode)
		u.ErrorMessage = errorDescriptions[u.ErrorCode]
		if u.ErrorMessage == "" {
			u.ErrorMessage = "Twilio error " + u.ErrorCode
		}
	}
	return u, nil
}

// Report implements channels.Reporter for calls: the call's status as
// Twilio holds it now (completed → delivered, failed → failed; a call
// still in progress reports nothing final, and a busy or unanswered one
// is redialled, see RedialFor).
func (v *Voice) Report(ctx context.Context, providerID string) (ledger.ProviderUpdate, error) {
	tr := &callTransport{base: v.cfg.Transport, target: v.target, ctx: ctx}
	rc := twiliogo.NewRestClientWithParams(twiliogo.ClientParams{
		Client: newAPIClient(v.cfg.AccountSID, v.cfg.AuthToken, v.cfg.Timeout, tr)})
	call, err := rc.Api.FetchCall(providerID, &openapi.FetchCallParams{})
	if err != nil {
		return ledger.ProviderUpdate{}, classifyWith(err, tr, voiceErrorClasses)
	}
	u := ledger.ProviderUpdate{Channel: v.Name(), ProviderID: providerID}
	if call.Status != nil {
		u.ProviderStatus = *call.Status
		u.Status = callStatuses[*call.Status]
	}
	return u, nil
}

var (
	_ channels.Finder   = (*SMS)(nil)
	_ channels.Reporter = (*SMS)(nil)
	_ channels.Reporter = (*Voice)(nil)
	_ channels.Redialer = (*Voice)(nil)
)
