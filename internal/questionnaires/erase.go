package questionnaires

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
)

// Erase removes every response of the tenant to the identities (answers,
// scores, risks, the address, its web form's link) and their index, and
// returns the ids of the responses removed. A response in progress ends
// first, as if the patient had opted out, so its timers and pending
// questions make nothing more; its messages are the ledger's to erase.
// The questionnaires' counts no longer include the responses. Erasing
// again removes nothing more.
func (s *Service) Erase(ctx context.Context, tenant string, ids []consent.Identity) ([]string, error) {
	var erased []string
	for _, who := range ids {
		if !who.Valid() {
			continue
		}
		key := byKey(tenant, who)
		rids, err := s.Redis.ZRange(ctx, key, 0, -1).Result()
		if err != nil {
			return erased, err
		}
		for _, rid := range rids {
			if err := s.eraseResponse(ctx, tenant, rid); err != nil {
				return erased, err
			}
			erased = append(erased, rid)
		}
		if err := s.Redis.Del(ctx, key).Err(); err != nil {
			return erased, err
		}
	}
	return erased, nil
}

func (s *Service) eraseResponse(ctx context.Context, tenant, id string) error {
	if err := s.stop(ctx, tenant, id, "the patient's data was erased"); err != nil {
		return err
	}
	unlock, err := s.lock(ctx, tenant, id)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := s.GetResponse(ctx, tenant, id)
	if errors.Is(err, ErrResponseNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	link, err := s.Redis.Get(ctx, linkKey(tenant, id)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	pipe := s.Redis.TxPipeline()
	if link != "" {
		pipe.Del(ctx, linkKey(tenant, id))
	}
	pipe.ZRem(ctx, listKey(tenant, r.Questionnaire), id)
	pipe.Del(ctx, respKey(tenant, id))
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	other := s.Redis.Pipeline()
	if link != "" {
		other.Del(ctx, formKey(strings.TrimPrefix(link, s.formURL(""))))
	}
	other.SRem(ctx, openKey(r.identity()), tenant+" "+id)
	_, err = other.Exec(ctx)
	return err
}
