package wechatsim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pusher signs, and in safe mode encrypts, message pushes the way WeChat's
// servers send them to an official account's server URL, and reads the
// passive replies. Its crypto is written here from WeChat's documentation
// with the standard library alone (not silenceper's), so a test of the
// gateway against it is not a library checked against itself.
type Pusher struct {
	// Token is the server configuration's Token.
	Token string
	// EncodingAESKey (43 characters) turns safe mode on: pushes are
	// encrypted and signed with msg_signature. Plaintext mode when empty.
	EncodingAESKey string
	// AppID is the official account's app id, sealed into each ciphertext.
	AppID string
	// Now is WeChat's clock; time.Now when nil.
	Now func() time.Time
	// Random, when set, is the 16 random bytes of every ciphertext (only for
	// reproducing a known vector); fresh random bytes otherwise.
	Random []byte
}

func (p Pusher) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

// Signature is WeChat's signature: the hex SHA-1 of the parts sorted and
// concatenated. (token, timestamp, nonce) signs the URL verification and
// plaintext pushes; (token, timestamp, nonce, Encrypt) is msg_signature.
func Signature(parts ...string) string {
	s := append([]string(nil), parts...)
	sort.Strings(s)
	sum := sha1.Sum([]byte(strings.Join(s, "")))
	return hex.EncodeToString(sum[:])
}

// Verification is the query of the GET WeChat sends when the server URL
// is configured: the server must answer echostr.
func (p Pusher) Verification(echostr string) url.Values {
	ts, nonce := p.stamp()
	return url.Values{"signature": {Signature(p.Token, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {echostr}}
}

// Push returns the query and body WeChat posts for a push whose XML is
// plain: the XML itself in plaintext mode; in safe mode an envelope with
// the encrypted XML, signed with msg_signature. openid is the query's
// openid parameter (WeChat adds the sender's openid to the URL).
func (p Pusher) Push(plain []byte, openid string) (url.Values, []byte, error) {
	ts, nonce := p.stamp()
	q := url.Values{"signature": {Signature(p.Token, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce}}
	if openid != "" {
		q.Set("openid", openid)
	}
	if p.EncodingAESKey == "" {
		return q, plain, nil
	}
	enc, err := p.Encrypt(plain)
	if err != nil {
		return nil, nil, err
	}
	q.Set("encrypt_type", "aes")
	q.Set("msg_signature", Signature(p.Token, ts, nonce, enc))
	var to struct {
		To string `xml:"ToUserName"`
	}
	_ = xml.Unmarshal(plain, &to)
	env := fmt.Sprintf("<xml><ToUserName><![CDATA[%s]]></ToUserName><Encrypt><![CDATA[%s]]></Encrypt></xml>", to.To, enc)
	return q, []byte(env), nil
}

// Encrypt is WeChat's message encryption: base64 of AES-256-CBC (key from
// the EncodingAESKey, IV its first 16 bytes) over random(16) ‖ length(4,
// big endian) ‖ msg ‖ appid, padded PKCS#7 to a multiple of 32 bytes.
func (p Pusher) Encrypt(msg []byte) (string, error) {
	key, err := aesKey(p.EncodingAESKey)
	if err != nil {
		return "", err
	}
	random := p.Random
	if random == nil {
		random = make([]byte, 16)
		_, _ = rand.Read(random)
	}
	if len(random) != 16 {
		return "", errors.New("wechatsim: Random must be 16 bytes")
	}
	buf := bytes.NewBuffer(nil)
	buf.Write(random)
	_ = binary.Write(buf, binary.BigEndian, uint32(len(msg)))
	buf.Write(msg)
	buf.WriteString(p.AppID)
	pad := 32 - buf.Len()%32
	buf.Write(bytes.Repeat([]byte{byte(pad)}, pad))
	block, _ := aes.NewCipher(key)
	out := make([]byte, buf.Len())
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, buf.Bytes())
	return base64.StdEncoding.EncodeToString(out), nil
}

// Decrypt reverses Encrypt and checks the sealed app id.
func (p Pusher) Decrypt(enc string) ([]byte, error) {
	key, err := aesKey(p.EncodingAESKey)
	if err != nil {
		return nil, err
	}
	ct, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("wechatsim: ciphertext is not base64 of whole AES blocks")
	}
	block, _ := aes.NewCipher(key)
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad < 1 || pad > 32 || pad > len(pt) {
		return nil, errors.New("wechatsim: bad padding")
	}
	pt = pt[:len(pt)-pad]
	if len(pt) < 20 {
		return nil, errors.New("wechatsim: plaintext too short")
	}
	n := int(binary.BigEndian.Uint32(pt[16:20]))
	if n > len(pt)-20 {
		return nil, errors.New("wechatsim: bad length")
	}
	msg, appID := pt[20:20+n], string(pt[20+n:])
	if appID != p.AppID {
		return nil, fmt.Errorf("wechatsim: sealed for app id %q, not %q", appID, p.AppID)
	}
	return msg, nil
}

// Reply is a passive reply read back by OpenReply.
type Reply struct {
	// XML is the reply message (decrypted in safe mode); nil when the server
	// acknowledged without a reply ("success" or an empty body).
	XML []byte
	// Encrypted says the reply came in a safe-mode envelope.
	Encrypted bool
}

// OpenReply reads a server's answer to a push as WeChat does: "success" or
// nothing acknowledges; in safe mode a reply must be an envelope whose
// MsgSignature is valid and whose Encrypt decrypts for the app id.
func (p Pusher) OpenReply(body []byte) (Reply, error) {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || string(b) == "success" {
		return Reply{}, nil
	}
	if p.EncodingAESKey == "" {
		return Reply{XML: body}, nil
	}
	var env struct {
		XMLName      xml.Name `xml:"xml"`
		Encrypt      string   `xml:"Encrypt"`
		MsgSignature string   `xml:"MsgSignature"`
		TimeStamp    string   `xml:"TimeStamp"`
		Nonce        string   `xml:"Nonce"`
	}
	if err := xml.Unmarshal(body, &env); err != nil || env.Encrypt == "" {
		return Reply{}, fmt.Errorf("wechatsim: a safe-mode reply must be an encrypted envelope: %q", body)
	}
	want := Signature(p.Token, env.TimeStamp, env.Nonce, env.Encrypt)
	if subtle.ConstantTimeCompare([]byte(env.MsgSignature), []byte(want)) != 1 {
		return Reply{}, errors.New("wechatsim: the reply's MsgSignature is wrong")
	}
	msg, err := p.Decrypt(env.Encrypt)
	if err != nil {
		return Reply{}, err
	}
	return Reply{XML: msg, Encrypted: true}, nil
}

func (p Pusher) stamp() (ts, nonce string) {
	n, _ := rand.Int(rand.Reader, big.NewInt(1_000_000_000))
	return strconv.FormatInt(p.now().Unix(), 10), n.String()
}

func aesKey(encoded string) ([]byte, error) {
	if len(encoded) != 43 {
		return nil, errors.New("wechatsim: the EncodingAESKey must be 43 characters")
	}
	key, err := base64.StdEncoding.DecodeString(encoded + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("wechatsim: the EncodingAESKey is not base64 of 32 bytes")
	}
	return key, nil
}

// TextMessage is the XML of a text message a user (openid from) sent to
// the official account (original id to).
func TextMessage(to, from, content string, msgID int64, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content><MsgId>%d</MsgId></xml>",
		to, from, at.Unix(), content, msgID)
}

// TemplateFinish is the XML of the TEMPLATESENDJOBFINISH event WeChat
// pushes once a template message reached the user, or did not: status is
// "success", "failed:user block" or "failed: system failed". Note its
// MsgID element, spelled unlike a message's MsgId.
func TemplateFinish(to, from string, msgID int64, status string, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"+
		"<MsgID>%d</MsgID><Status><![CDATA[%s]]></Status></xml>",
		to, from, at.Unix(), msgID, status)
}

// Message is the XML of a message of another type (image, voice…) with
// only the common fields and MsgId.
func Message(to, from, msgType string, msgID int64, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[%s]]></MsgType><MediaId><![CDATA[media-1]]></MediaId><MsgId>%d</MsgId></xml>",
		to, from, at.Unix(), msgType, msgID)
}

// Event is the XML of an event push (subscribe, unsubscribe, SCAN, CLICK…);
// key is the EventKey, left out when empty.
func Event(to, from, event, key string, at time.Time) []byte {
	k := ""
	if key != "" {
		k = "<EventKey><![CDATA[" + key + "]]></EventKey>"
	}
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[%s]]></Event>%s</xml>",
		to, from, at.Unix(), event, k)
}
