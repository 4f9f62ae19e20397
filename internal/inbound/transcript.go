package inbound

import (
	"context"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

// Transcript takes the transcript of a recorded answer (channels.Transcriber):
// it joins the reply feed and the patient's conversation as the call's
// reply, is sent to the clinic as message.reply, and is read by the
// tenant's urgent-reply rules like a text — "I have chest pain" said on a
// follow-up call opens an escalation as it would by SMS. The message's
// history notes that a transcript came. Run again with the same
// transcript id (a provider's retry), it files nothing twice.
//
// Keywords (STOP, HELP) are not taken from a transcript: a transcription
// error must not opt a patient out; a spoken "stop" reaches the staff in
// the feed instead.
func (r *Receiver) Transcript(ctx context.Context, id, recordingSID, transcriptID, text string) error {
	m, err := r.Ledger.Get(ctx, "", id)
	if err != nil {
		return err
	}
	if r.Replies == nil {
		return nil
	}
	rep := replies.Reply{Channel: m.Channel, From: workers.IdentityOf(m.Channel, m.To), Body: text,
		ReceivedAt: time.Now(), InReplyTo: id, ProviderID: transcriptID}
	cursor, first, err := r.Replies.AddOnce(ctx, m.Tenant, rep)
	if err != nil {
		return err
	}
	rep.ID = cursor
	if first {
		_ = r.Ledger.Note(ctx, id, "transcript of the recorded answer received (in the reply feed)")
	}
	r.Metrics.Inbound(m.Channel, "transcript")
	r.Events.PublishAs(ctx, m.Tenant, webhooks.MessageReply, rep, "", "transcript-"+transcriptID)
	if r.Escalator != nil {
		esc, err := r.Escalator.Consider(ctx, m.Tenant, rep.ID, id, m.Channel, text, "")
		if err != nil {
			return err
		}
		r.replied(ctx, m.Tenant, rep.From, esc)
	}
	return nil
}

var _ channels.Transcriber = (*Receiver)(nil)
