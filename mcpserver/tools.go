package mcpserver

import (
	"context"
	"encoding/json"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentvault/agentvault/vault"
)

// Tool inputs: the HTTP API's, with descriptions for a model.
type (
	purposeIn struct {
		Purpose string `json:"purpose,omitempty" jsonschema:"the task you are doing; you see what your grants for this purpose show (optional here; without it, what all your grants show)"`
	}
	collectionIn struct {
		Collection string `json:"collection" jsonschema:"the collection's name"`
		Purpose    string `json:"purpose,omitempty" jsonschema:"the task you are doing"`
	}
	recordIn struct {
		Collection string `json:"collection" jsonschema:"the collection's name"`
		ID         string `json:"id" jsonschema:"the record's id"`
		Purpose    string `json:"purpose" jsonschema:"the task you are doing: required, and recorded in the audit log"`
	}
	listIn struct {
		Collection string `json:"collection" jsonschema:"the collection's name"`
		Purpose    string `json:"purpose" jsonschema:"the task you are doing: required, and recorded in the audit log"`
		Limit      int    `json:"limit,omitempty" jsonschema:"records per page, 1 to 1000 (default 100)"`
		After      string `json:"after,omitempty" jsonschema:"the next cursor of the previous page"`
	}
	searchIn struct {
		Collection string         `json:"collection" jsonschema:"the collection's name"`
		Where      map[string]any `json:"where" jsonschema:"field name to value or token; every condition must hold. Plain fields marked as indexed by value; sensitive fields by token; deterministic sensitive fields by value only if your grant reveals them plain"`
		Purpose    string         `json:"purpose" jsonschema:"the task you are doing: required, and recorded in the audit log"`
		Limit      int            `json:"limit,omitempty" jsonschema:"records per page, 1 to 1000 (default 100)"`
		After      string         `json:"after,omitempty" jsonschema:"the next cursor of the previous page"`
	}
	detokenizeIn struct {
		Tokens     []string `json:"tokens" jsonschema:"the tokens to reveal, at most 1000"`
		Purpose    string   `json:"purpose" jsonschema:"the task you are doing: must be the purpose of a grant you hold"`
		ApprovalID string   `json:"approval_id,omitempty" jsonschema:"after a person approved a held request: its approval id, with the same tokens and purpose"`
	}
	redactIn struct {
		Text  string   `json:"text" jsonschema:"the text, for example a prompt or a document, at most 1 MiB"`
		Types []string `json:"types,omitempty" jsonschema:"only these entity types: EMAIL, PHONE, CREDIT_CARD, IBAN, US_SSN, IP_ADDRESS, SECRET, DATE_OF_BIRTH, or collection.field for values the vault holds in a field marked detect (default all)"`
		Mode  string   `json:"mode,omitempty" jsonschema:"token (default): replace each value with a [TYPE_...] token that restore_text can turn back; mask: with [TYPE], for good"`
	}
	restoreIn struct {
		Text       string `json:"text" jsonschema:"a text holding [TYPE_...] tokens, for example a model's answer"`
		Purpose    string `json:"purpose" jsonschema:"the task you are doing: must be the purpose of a grant on the text collection"`
		ApprovalID string `json:"approval_id,omitempty" jsonschema:"after a person approved a held restore: its approval id, with the same text and purpose"`
	}
	approvalIn struct {
		ApprovalID string `json:"approval_id" jsonschema:"the approval id a held detokenize request returned"`
	}
)

// Tool outputs: JSON-typed versions of the vault's answers.
type (
	recordOut struct {
		ID        string         `json:"id"`
		Fields    map[string]any `json:"fields" jsonschema:"the fields you may see: plain fields as values, sensitive ones as tokens"`
		CreatedAt time.Time      `json:"created_at"`
	}
	recordsOut struct {
		Records []recordOut `json:"records"`
		Next    string      `json:"next,omitempty" jsonschema:"pass as after for the next page; absent on the last page"`
	}
	collectionsOut struct {
		Collections []vault.Collection `json:"collections"`
	}
	resultOut struct {
		Token      string `json:"token"`
		Status     string `json:"status" jsonschema:"ok, masked, denied, not_found or pending_approval"`
		Value      any    `json:"value,omitempty" jsonschema:"the value (ok) or its mask (masked)"`
		Reason     string `json:"reason,omitempty" jsonschema:"why it was denied, or the approval rule it tripped"`
		ApprovalID string `json:"approval_id,omitempty" jsonschema:"for pending_approval: poll approval_status with it, then call detokenize again with it"`
	}
	detokenizeOut struct {
		Results []resultOut `json:"results"`
	}
	restoreOut struct {
		Text    string      `json:"text" jsonschema:"the text with every token you may see replaced by its value"`
		Results []resultOut `json:"results"`
	}
)

func ptr[T any](v T) *T { return &v }

// readOnly marks a tool that reads: agentvault is a closed world.
func readOnly(title string) *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{Title: title, ReadOnlyHint: true, OpenWorldHint: ptr(false)}
}

// call runs one tool against the caller's backend, turning a refusal
// into a tool error.
func call[In, Out any](backend BackendFor, do func(context.Context, Backend, In) (Out, error)) mcp.ToolHandlerFor[In, Out] {
	return func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
		var zero Out
		b, err := backend(ctx, req)
		if err != nil {
			return nil, zero, toolError(err)
		}
		out, err := do(ctx, b, in)
		if err != nil {
			return nil, zero, toolError(err)
		}
		return nil, out, nil
	}
}

func addTools(s *mcp.Server, backend BackendFor) {
	addTextTools(s, backend)
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "Who you are in agentvault: your principal id, name and roles.", Annotations: readOnly("Who am I")},
		call(backend, func(ctx context.Context, b Backend, _ struct{}) (*Identity, error) { return b.WhoAmI(ctx) }))
	mcp.AddTool(s, &mcp.Tool{Name: "list_collections", Description: "The collections you may see, each with the fields your grants show (sensitive fields hold tokens). A collection you have no grant on is not listed.", Annotations: readOnly("List collections")},
		call(backend, func(ctx context.Context, b Backend, in purposeIn) (*collectionsOut, error) {
			cs, err := b.Collections(ctx, in.Purpose)
			if err != nil {
				return nil, err
			}
			return &collectionsOut{Collections: cs}, nil
		}))
	mcp.AddTool(s, &mcp.Tool{Name: "describe_collection", Description: "One collection's schema, cut to the fields your grants show: each field's type, whether it is sensitive (stored as a token), its token kind, and whether reveals of it need a person's approval.", Annotations: readOnly("Describe a collection")},
		call(backend, func(ctx context.Context, b Backend, in collectionIn) (*vault.Collection, error) {
			return b.Collection(ctx, in.Collection, in.Purpose)
		}))
	mcp.AddTool(s, &mcp.Tool{Name: "get_record", Description: "One record, with the fields your grants for this purpose show: plain fields as values, sensitive fields as tokens (use detokenize to reveal them). A record outside your grants answers not_found. Every read is audited.", Annotations: readOnly("Get a record")},
		call(backend, func(ctx context.Context, b Backend, in recordIn) (*recordOut, error) {
			r, err := b.Record(ctx, in.Collection, in.ID, in.Purpose)
			if err != nil {
				return nil, err
			}
			out := toRecord(*r)
			return &out, nil
		}))
	mcp.AddTool(s, &mcp.Tool{Name: "list_records", Description: "A page of the records your grants for this purpose cover, in a stable order; pass next as after for the following page. Every page is audited.", Annotations: readOnly("List records")},
		call(backend, func(ctx context.Context, b Backend, in listIn) (*recordsOut, error) {
			rs, next, err := b.Records(ctx, in.Collection, in.Purpose, in.Limit, in.After)
			if err != nil {
				return nil, err
			}
			return toRecords(rs, next), nil
		}))
	mcp.AddTool(s, &mcp.Tool{Name: "search_records", Description: "Find records by equality: indexed plain fields by value, sensitive fields by token (for example a token from another record, to join), deterministic sensitive fields by value only if your grant reveals them plain. Results are paged like list_records and show what your grants show. Every search is audited (values only as keyed hashes).", Annotations: readOnly("Search records")},
		call(backend, func(ctx context.Context, b Backend, in searchIn) (*recordsOut, error) {
			where := make(map[string]json.RawMessage, len(in.Where))
			for k, v := range in.Where {
				raw, err := json.Marshal(v)
				if err != nil {
					return nil, err
				}
				where[k] = raw
			}
			rs, next, err := b.Search(ctx, in.Collection, vault.SearchRequest{Where: where, Purpose: in.Purpose, Limit: in.Limit, After: in.After})
			if err != nil {
				return nil, err
			}
			return toRecords(rs, next), nil
		}))
	mcp.AddTool(s, &mcp.Tool{
		Name: "detokenize",
		Description: "Reveal the values behind tokens, under your grants for this purpose. Each token answers ok with its value, masked with a masked value, denied with the reason, not_found, or pending_approval with an approval id and the rule that tripped: a person must approve first. " +
			"Then poll approval_status and, once approved, call detokenize again with the same tokens, the same purpose and approval_id: it reveals once, within a short window. Every call is audited.",
		Annotations: &mcp.ToolAnnotations{Title: "Reveal values", ReadOnlyHint: false, DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
	}, call(backend, func(ctx context.Context, b Backend, in detokenizeIn) (*detokenizeOut, error) {
		res, err := b.Detokenize(ctx, vault.DetokenizeRequest{Tokens: in.Tokens, Purpose: in.Purpose, ApprovalID: in.ApprovalID})
		if err != nil {
			return nil, err
		}
		return &detokenizeOut{Results: toResults(res)}, nil
	}))
	mcp.AddTool(s, &mcp.Tool{Name: "approval_status", Description: "The state of one of your approval requests: pending (wait and ask again), approved (call detokenize again with approval_id before redeem_by), denied, expired, or redeemed.", Annotations: readOnly("Approval status")},
		call(backend, func(ctx context.Context, b Backend, in approvalIn) (*vault.Approval, error) {
			return b.Approval(ctx, in.ApprovalID)
		}))
}

func addTextTools(s *mcp.Server, backend BackendFor) {
	mcp.AddTool(s, &mcp.Tool{
		Name:        "redact_text",
		Description: "Replace the sensitive values in a text (emails, phone numbers, cards, IBANs, SSNs, IP addresses, secrets, dates of birth) with tokens like [EMAIL_ABC...], before the text goes anywhere else. The same value gets the same token, so you can still tell mentions apart. Copy tokens exactly as they are.",
		Annotations: &mcp.ToolAnnotations{Title: "Redact text", ReadOnlyHint: false, DestructiveHint: ptr(false), IdempotentHint: true, OpenWorldHint: ptr(false)},
	}, call(backend, func(ctx context.Context, b Backend, in redactIn) (*vault.RedactResult, error) {
		return b.Redact(ctx, vault.RedactRequest{Text: in.Text, Types: in.Types, Mode: in.Mode})
	}))
	mcp.AddTool(s, &mcp.Tool{
		Name:        "restore_text",
		Description: "Put back the values behind the [TYPE_...] tokens of a text that your grants let you see, plain or masked; other tokens stay. Results per token are as detokenize answers, including pending_approval: then poll approval_status and send the same text again with approval_id. Audited.",
		Annotations: &mcp.ToolAnnotations{Title: "Restore text", ReadOnlyHint: false, DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
	}, call(backend, func(ctx context.Context, b Backend, in restoreIn) (*restoreOut, error) {
		res, err := b.Restore(ctx, vault.TextRestoreRequest{Text: in.Text, Purpose: in.Purpose, ApprovalID: in.ApprovalID})
		if err != nil {
			return nil, err
		}
		return &restoreOut{Text: res.Text, Results: toResults(res.Results)}, nil
	}))
}

func toResults(res []vault.DetokenizeResult) []resultOut {
	out := make([]resultOut, len(res))
	for i, r := range res {
		out[i] = resultOut{Token: r.Token, Status: r.Status, Reason: r.Reason, ApprovalID: r.ApprovalID}
		if len(r.Value) > 0 {
			json.Unmarshal(r.Value, &out[i].Value)
		}
	}
	return out
}

func toRecord(r vault.Record) recordOut {
	out := recordOut{ID: r.ID, CreatedAt: r.CreatedAt, Fields: make(map[string]any, len(r.Fields))}
	for k, v := range r.Fields {
		var x any
		json.Unmarshal(v, &x)
		out.Fields[k] = x
	}
	return out
}

func toRecords(rs []vault.Record, next string) *recordsOut {
	out := &recordsOut{Records: make([]recordOut, len(rs)), Next: next}
	for i, r := range rs {
		out.Records[i] = toRecord(r)
	}
	return out
}
