package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/agentvault/agentvault/detect"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// Free text. Redact replaces each sensitive value it finds with a token
// that carries its type, "[EMAIL_<26 base32>]", and stores the value
// encrypted in a text collection (one sensitive, deterministic field per
// entity type), so the same value of the same type gets the same token
// everywhere in that collection. Restore turns such tokens back into
// values through Detokenize: grants on the text collection name entity
// types (as lower-case fields), and approvals and the audit log apply as
// to any reveal.

// DefaultTextCollection is where redacted values go unless a request
// names another text collection.
const DefaultTextCollection = "text"

// MaxTextBytes bounds one text.
const MaxTextBytes = 1 << 20

// RedactRequest asks for a text with its sensitive values replaced.
type RedactRequest struct {
	Text       string   `json:"text"`
	Collection string   `json:"collection,omitempty"`
	Types      []string `json:"types,omitempty"`
	Mode       string   `json:"mode,omitempty"`   // "token" (default) or "mask"
	Region     string   `json:"region,omitempty"` // default region for phone numbers
}

// RedactedEntity is one value replaced: offsets into the input text.
type RedactedEntity struct {
	Type  string `json:"type"`
	Start int    `json:"start"`
	End   int    `json:"end"`
	Token string `json:"token,omitempty"`
}

// RedactResult is the redacted text and what was replaced.
type RedactResult struct {
	Text     string           `json:"text"`
	Entities []RedactedEntity `json:"entities"`
}

// textField is the text collection's field for an entity type.
func textField(typ string) string { return strings.ToLower(typ) }

// textSchema is a text collection's schema: every entity type a
// sensitive, deterministic string field.
func textSchema(name string) Collection {
	c := Collection{Name: name}
	for _, typ := range detect.Types {
		f := Field{Name: textField(typ), Type: TypeString, Sensitive: true, Token: tokenizer.KindDeterministic}
		switch typ {
		case detect.Email:
			f.Mask = tokenizer.MaskEmail
		case detect.CreditCard, detect.IBAN, detect.Phone:
			f.Mask = tokenizer.MaskLast4
		}
		c.Fields = append(c.Fields, f)
	}
	return c
}

// textToken is how a stored value's deterministic token appears in text.
func textToken(typ, dtk string) string {
	return "[" + typ + "_" + strings.TrimPrefix(dtk, tokenizer.DeterministicPrefix) + "]"
}

var textTokenRe = regexp.MustCompile(`\[([A-Z][A-Z0-9_]*[A-Z0-9])_([A-Z2-7]{26})\]`)

// isKnownType tells a known value's type ("collection.field") from a
// pattern's.
func isKnownType(typ string) bool { return strings.Contains(typ, ".") }

// checkTypes checks a redaction's types: pattern types, and known values'
// "collection.field" where the field has detect and the caller may see it
// (to an agent, a field it has no grant on is as unknown as one that does
// not exist).
func (s *Service) checkTypes(actor *Principal, types []string) error {
	var sees func(coll, field, id string) bool
	for _, t := range types {
		if slices.Contains(detect.Types, t) {
			continue
		}
		if coll, field, ok := strings.Cut(t, "."); ok {
			if c, err := s.schema(coll); err == nil {
				if sees == nil {
					sees = s.knownVisibility(actor)
				}
				if f, ok := c.Field(field); ok && f.Detect && sees(coll, field, "") {
					continue
				}
			}
		}
		return invalid("invalid_types", "unknown entity type %q; types are %v, or collection.field for a field with detect", t, detect.Types)
	}
	return nil
}

// textCollection returns the named text collection, creating it on first
// use (audited as made by the system for this caller's request).
func (s *Service) textCollection(ctx context.Context, meta RequestMeta, name string) (*collection, error) {
	if name == "" {
		name = DefaultTextCollection
	}
	c, err := s.collection(name)
	if errors.Is(err, ErrNotFound) {
		if _, err := s.CreateCollection(ctx, RequestMeta{RequestID: meta.RequestID}, textSchema(name)); err != nil && !errors.Is(err, ErrConflict) {
			return nil, err
		}
		c, err = s.collection(name)
	}
	if err != nil {
		return nil, err
	}
	for _, typ := range detect.Types {
		if f, ok := c.Field(textField(typ)); !ok || !f.Sensitive || f.Token != tokenizer.KindDeterministic {
			return nil, invalid("not_a_text_collection", "collection %q is not a text collection", name)
		}
	}
	return c, nil
}

// Redact replaces the sensitive values in a text with tokens (stored in
// the text collection) or, with mode "mask", with their type in brackets
// (stored nowhere). Offsets are byte offsets into the input.
func (s *Service) Redact(ctx context.Context, meta RequestMeta, req RedactRequest) (*RedactResult, error) {
	switch {
	case len(req.Text) > MaxTextBytes:
		return nil, &Error{Kind: ErrTooLarge, Code: "text_too_large", Message: "a text holds at most 1 MiB"}
	case req.Mode != "" && req.Mode != "token" && req.Mode != "mask":
		return nil, invalid("invalid_mode", "mode must be token or mask")
	}
	if err := s.checkTypes(meta.Actor, req.Types); err != nil {
		return nil, err
	}
	known, err := s.knownMatcher(meta.Actor)
	if err != nil {
		return nil, err
	}
	o := detect.Options{Types: req.Types, Region: req.Region}
	if known != nil {
		o.Known = known
	}
	found := detect.Find(req.Text, o)
	if known != nil && known.err != nil {
		// Unsure the text is clean, redaction fails closed.
		return nil, fmt.Errorf("%w: known values: %v", ErrUnavailable, known.err)
	}
	res := &RedactResult{Entities: make([]RedactedEntity, len(found))}
	repl := make([]string, len(found))
	for i, e := range found {
		res.Entities[i] = RedactedEntity{Type: e.Type, Start: e.Start, End: e.End}
		repl[i] = "[" + e.Type + "]"
		if isKnownType(e.Type) {
			repl[i] = "[" + knownType(e.Type) + "]"
			if req.Mode != "mask" {
				norm, _ := detect.Normalize(req.Text[e.Start:e.End])
				res.Entities[i].Token = textToken(knownType(e.Type), known.hits[norm].token)
				repl[i] = res.Entities[i].Token
			}
		}
	}
	if req.Mode != "mask" {
		c, err := s.textCollection(ctx, meta, req.Collection)
		if err != nil {
			return nil, err
		}
		if err := s.tokenizeEntities(ctx, meta, c, req.Text, found, res, repl); err != nil {
			return nil, err
		}
	}
	var b strings.Builder
	last := 0
	for i, e := range found {
		b.WriteString(req.Text[last:e.Start])
		b.WriteString(repl[i])
		last = e.End
	}
	b.WriteString(req.Text[last:])
	res.Text = b.String()
	return res, nil
}

// tokenizeEntities gives each found value its deterministic token and
// stores the values the collection does not hold yet, one record each:
// one read transaction finds which those are, and they are written in
// batches as large as the vault takes.
func (s *Service) tokenizeEntities(ctx context.Context, meta RequestMeta, c *collection, text string, found []detect.Entity, res *RedactResult, repl []string) error {
	type value struct {
		dtk   string
		field string
		raw   json.RawMessage
	}
	var distinct []value
	seen := map[string]bool{}
	for i, e := range found {
		if isKnownType(e.Type) {
			continue // held already: its token is the field's
		}
		name := textField(e.Type)
		f, _ := c.Field(name)
		raw, _ := json.Marshal(text[e.Start:e.End])
		dtk, err := tokenizer.Deterministic(c.index, name, canonical(f, raw))
		if err != nil {
			return err
		}
		res.Entities[i] = RedactedEntity{Type: e.Type, Start: e.Start, End: e.End, Token: textToken(e.Type, dtk)}
		repl[i] = res.Entities[i].Token
		if !seen[dtk] {
			seen[dtk] = true
			distinct = append(distinct, value{dtk, name, raw})
		}
	}
	var missing []map[string]json.RawMessage
	err := s.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{PrefetchValues: false, PrefetchSize: 4}) // seeks to one token each
		defer it.Close()
		for _, v := range distinct {
			_, exists, err := firstShared(it, v.dtk)
			if err != nil {
				return err
			}
			if !exists {
				missing = append(missing, map[string]json.RawMessage{v.field: v.raw})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for len(missing) > 0 {
		n := min(len(missing), s.cfg.MaxBatchRecords)
		if _, err := s.CreateRecords(ctx, meta, c.Name, missing[:n]); err != nil {
			return err
		}
		missing = missing[n:]
	}
	return nil
}

// TextRestoreRequest asks for a text's tokens to be replaced by their values.
type TextRestoreRequest struct {
	Text       string `json:"text"`
	Purpose    string `json:"purpose"`
	ApprovalID string `json:"approval_id,omitempty"`
}

// TextRestoreResult is the restored text and, per token in it, what was
// decided, as detokenize answers (the token as it appears in the text).
type TextRestoreResult struct {
	Text    string             `json:"text"`
	Results []DetokenizeResult `json:"results"`
}

// RestoreText replaces each text token the caller may reveal with its value
// (plain or masked, per its grant), leaving the others as they are. It is
// one detokenize request, with its audit entry, rules and approvals: a
// token that needs approval answers pending_approval, and the same text
// sent again with approval_id reveals it once.
func (s *Service) RestoreText(ctx context.Context, meta RequestMeta, req TextRestoreRequest) (*TextRestoreResult, error) {
	if len(req.Text) > MaxTextBytes {
		return nil, &Error{Kind: ErrTooLarge, Code: "text_too_large", Message: "a text holds at most 1 MiB"}
	}
	if err := checkPurpose(req.Purpose); err != nil {
		return nil, err
	}
	matches := textTokenRe.FindAllStringSubmatchIndex(req.Text, -1)
	var inText, dtks []string
	for _, m := range matches {
		tok := req.Text[m[0]:m[1]]
		if slices.Contains(inText, tok) {
			continue
		}
		inText = append(inText, tok)
		dtks = append(dtks, tokenizer.DeterministicPrefix+req.Text[m[4]:m[5]])
	}
	if len(dtks) == 0 {
		return &TextRestoreResult{Text: req.Text, Results: []DetokenizeResult{}}, nil
	}
	res, err := s.Detokenize(ctx, meta, DetokenizeRequest{Tokens: dtks, Purpose: req.Purpose, ApprovalID: req.ApprovalID})
	if err != nil {
		return nil, err
	}
	values := map[string]string{}
	for i := range res {
		res[i].Token = inText[i]
		if res[i].Status != StatusOK && res[i].Status != StatusMasked {
			continue
		}
		var v string
		if json.Unmarshal(res[i].Value, &v) != nil {
			v = string(res[i].Value)
		}
		values[inText[i]] = v
	}
	text := textTokenRe.ReplaceAllStringFunc(req.Text, func(tok string) string {
		if v, ok := values[tok]; ok {
			return v
		}
		return tok
	})
	return &TextRestoreResult{Text: text, Results: res}, nil
}
