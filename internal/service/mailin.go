package service

import (
	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/returnpath"
)

// returnKeys are the keys that sign each email's return path, Reply-To and
// unsubscribe link (nil without EMAIL_RETURN_SECRET).
func returnKeys(cfg config.Config) (*returnpath.Keys, error) {
	if cfg.Email.ReturnSecret == "" {
		return nil, nil
	}
	return returnpath.New(cfg.Email.ReturnSecret, cfg.Email.ReturnDomain)
}

// startMailIn starts the inbound SMTP listener of an API process
// (EMAIL_INBOUND_ADDR): the mail exchanger of the return domain, which
// applies bounces, complaints and replies through the receiver, as the
// providers' webhooks do.
func (s *Service) startMailIn() error {
	if s.API == nil || s.Config.Email.InboundAddr == "" {
		if s.mailLn != nil {
			_ = s.mailLn.Close()
		}
		return nil
	}
	keys, err := returnKeys(s.Config)
	if err != nil {
		return err
	}
	l, err := email.Listen(email.InboundConfig{Addr: s.Config.Email.InboundAddr, Listener: s.mailLn, Keys: keys, Receiver: s.Inbound,
		MaxBytes: int64(s.Config.Email.InboundMaxBytes), PerMinute: s.Config.Email.InboundPerMinute,
		Timeout: AttemptTimeout(s.Config), Logger: s.log})
	if err != nil {
		return err
	}
	s.MailIn = l
	s.closers = append([]func() error{l.Close}, s.closers...)
	return nil
}
