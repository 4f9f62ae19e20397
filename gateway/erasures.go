package gateway

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/erasure"
)

// eraseContact erases a contact and everything the tenant holds about
// its identities (DELETE /v1/contacts/{id}).
func (s *Server) eraseContact(c *fiber.Ctx) error {
	id := c.Params("id")
	if !contacts.ValidID(id) {
		return problem(404, "not-found", "no contact with this id for your API key")
	}
	return s.startErasure(c, erasure.Request{ContactID: id, Actor: apiActor(c)})
}

// eraseIdentity erases everything the tenant holds about one identity,
// and the contact it belongs to (DELETE /v1/contacts?phone=…).
func (s *Server) eraseIdentity(c *fiber.Ctx) error {
	ids, p := identityQuery(c)
	if p != nil {
		return p
	}
	return s.startErasure(c, erasure.Request{Identities: ids, Actor: apiActor(c)})
}

func (s *Server) startErasure(c *fiber.Ctx, r erasure.Request) error {
	e, err := s.opts.Erasures.Start(c.UserContext(), tenantOf(c), r)
	switch {
	case errors.Is(err, contacts.ErrNotFound):
		return problem(404, "not-found", "no contact with this id for your API key")
	case errors.Is(err, erasure.ErrBadIdentity), errors.Is(err, erasure.ErrNoIdentity):
		return problem(400, "bad-query", "give exactly one of phone, email or wechat_openid")
	case err != nil:
		return s.unavailable(err)
	}
	c.Set(fiber.HeaderLocation, "/v1/erasures/"+e.ID)
	return c.Status(202).JSON(e)
}

// getErasure shows an erasure's progress, and once completed its
// tombstone.
func (s *Server) getErasure(c *fiber.Ctx) error {
	e, err := s.opts.Erasures.Get(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, erasure.ErrNotFound) {
		return problem(404, "not-found", "no erasure with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(e)
}

// identityQuery reads exactly one identity from the query (phone, email
// or wechat_openid), normalised.
func identityQuery(c *fiber.Ctx) ([]consent.Identity, error) {
	var ids []consent.Identity
	if v := c.Query("phone"); v != "" {
		e164, err := address.Phone(v, "")
		if err != nil {
			return nil, problem(400, "bad-query", "phone is not a valid international number")
		}
		ids = append(ids, consent.Identity{Kind: consent.Phone, Value: e164})
	}
	if v := c.Query("email"); v != "" {
		addr, ok := address.Email(v)
		if !ok {
			return nil, problem(400, "bad-query", "email is not a valid address")
		}
		ids = append(ids, consent.Identity{Kind: consent.Email, Value: addr})
	}
	if v := c.Query("wechat_openid"); v != "" {
		if !address.OpenID(v) {
			return nil, problem(400, "bad-query", "wechat_openid is not a WeChat openid")
		}
		ids = append(ids, consent.Identity{Kind: consent.WeChat, Value: v})
	}
	if len(ids) != 1 {
		return nil, problem(400, "bad-query", "give exactly one of phone, email or wechat_openid")
	}
	return ids, nil
}
