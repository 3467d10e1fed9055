//! A lexer and recursive-descent parser for the CSL subset in `ast`.
//! `parse_file` turns a `.csl` file into a `File` or its first syntax error.
//!
//! Operator precedence follows Zig, lowest first: `or`; `and`; comparisons
//! (which do not chain); bitwise `& ^ |`; shifts; `+ -`; `* / %`; prefix
//! `- ! ~ &`; postfix calls, indexing and fields. So bitwise operators bind
//! tighter than comparisons (`x & 1 == 0` is `(x & 1) == 0`) and shifts
//! tighter than bitwise ones (`r & 3 << 2` is `r & (3 << 2)`).

use super::ast::*;
use std::fmt;

/// A syntax error: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl std::error::Error for ParseError {}

type Result<T> = std::result::Result<T, ParseError>;

fn error<T>(pos: Pos, message: impl Into<String>) -> Result<T> {
    Err(ParseError { pos, message: message.into() })
}

/// Deeper nesting is an error, so that hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 256;

/// Parses one `.csl` file.
///
/// # Errors
///
/// The first syntax error in `text`.
pub fn parse_file(text: &str) -> Result<File> {
    // Lexing stops at a bad token; parsing the tokens before it reports
    // any error that comes earlier in the file.
    let (tokens, lex_error) = lex(text);
    let mut parser = Parser { tokens, at: 0, depth: 0 };
    let parsed = parser.file();
    match lex_error {
        Some(lex_error) => match parsed {
            Err(e) if (e.pos.line, e.pos.col) < (lex_error.pos.line, lex_error.pos.col) => Err(e),
            _ => Err(lex_error),
        },
        None => parsed,
    }
}

// ---------------------------------------------------------------- lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `@name`, without the `@`.
    Builtin(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// A keyword or punctuation mark, by its spelling.
    Fixed(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
struct Token<'a> {
    tok: Tok,
    /// The source text, for error messages.
    text: &'a str,
    pos: Pos,
}

const KEYWORDS: &[&str] = &[
    "const", "var", "fn", "task", "param", "comptime", "layout", "if", "else", "while", "return",
    "and", "or", "true", "false",
];

/// Longest first, so that `<<=` wins over `<<` and `<`.
const PUNCTUATION: &[&str] = &[
    "<<=", ">>=", "==", "!=", "<=", ">=", "<<", ">>", "+=", "-=", "*=", "/=", "%=", "&=", "|=",
    "^=", "->", "+", "-", "*", "/", "%", "&", "|", "^", "~", "!", "<", ">", "=", "(", ")", "[",
    "]", "{", "}", ",", ";", ":", ".",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The tokens of `src` up to its end or its first bad token, where an
/// end-of-file token stands in, and that error.
fn lex(src: &str) -> (Vec<Token<'_>>, Option<ParseError>) {
    let mut lexer = Lexer { src, offset: 0, pos: Pos { line: 1, col: 1 } };
    let mut tokens = Vec::new();
    loop {
        match lexer.token() {
            Ok(token) if token.tok == Tok::Eof => {
                tokens.push(token);
                return (tokens, None);
            }
            Ok(token) => tokens.push(token),
            Err(e) => {
                tokens.push(Token { tok: Tok::Eof, text: "", pos: e.pos });
                return (tokens, Some(e));
            }
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    offset: usize,
    /// Line and column (in characters) of the next character.
    pos: Pos,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.offset..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.pos.line = self.pos.line.saturating_add(1);
            self.pos.col = 1;
        } else {
            self.pos.col = self.pos.col.saturating_add(1);
        }
        Some(c)
    }

    fn bump_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.bump();
        }
    }

    fn token(&mut self) -> Result<Token<'a>> {
        // Whitespace and `//` comments (doc comments included) separate tokens.
        loop {
            self.bump_while(char::is_whitespace);
            if !self.rest().starts_with("//") {
                break;
            }
            self.bump_while(|c| c != '\n');
        }
        let start = self.offset;
        let pos = self.pos;
        let tok = match self.peek() {
            None => Tok::Eof,
            Some(c) if is_ident_start(c) => {
                self.bump_while(is_ident_char);
                let word = &self.src[start..self.offset];
                match KEYWORDS.iter().find(|k| **k == word) {
                    Some(keyword) => Tok::Fixed(keyword),
                    None => Tok::Ident(word.to_string()),
                }
            }
            Some(c) if c.is_ascii_digit() => self.number()?,
            Some('"') => self.string()?,
            Some('@') => {
                self.bump();
                if !self.peek().is_some_and(is_ident_start) {
                    return error(pos, "expected a builtin name after `@`");
                }
                let name_start = self.offset;
                self.bump_while(is_ident_char);
                Tok::Builtin(self.src[name_start..self.offset].to_string())
            }
            Some(c) => match PUNCTUATION.iter().find(|p| self.rest().starts_with(**p)) {
                Some(punct) => {
                    // Punctuation is ASCII: one character per byte.
                    for _ in 0..punct.len() {
                        self.bump();
                    }
                    Tok::Fixed(punct)
                }
                None => return error(pos, format!("unexpected character `{}`", c.escape_debug())),
            },
        };
        Ok(Token { tok, text: &self.src[start..self.offset], pos })
    }

    /// Decimal, `0x`, `0o` or `0b` integers and decimal floats; `_` may
    /// separate digits.
    fn number(&mut self) -> Result<Tok> {
        let start = self.offset;
        let pos = self.pos;
        let radix = match (self.peek(), self.peek_second()) {
            (Some('0'), Some('x')) => 16,
            (Some('0'), Some('o')) => 8,
            (Some('0'), Some('b')) => 2,
            _ => 10,
        };
        let mut is_float = false;
        if radix == 10 {
            self.bump_while(|c| c.is_ascii_digit() || c == '_');
            if self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                self.bump_while(|c| c.is_ascii_digit() || c == '_');
                is_float = true;
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                let mut exponent = self.rest().chars().skip(1).peekable();
                let signed = exponent.next_if(|c| matches!(c, '+' | '-')).is_some();
                if exponent.peek().is_some_and(char::is_ascii_digit) {
                    self.bump();
                    if signed {
                        self.bump();
                    }
                    self.bump_while(|c| c.is_ascii_digit());
                    is_float = true;
                }
            }
        } else {
            self.bump();
            self.bump();
            self.bump_while(is_ident_char);
        }
        if let Some(c) = self.peek().filter(|&c| is_ident_char(c)) {
            return error(self.pos, format!("unexpected `{c}` in a number literal"));
        }
        let literal = &self.src[start..self.offset];
        let digits: String = literal.chars().filter(|&c| c != '_').collect();
        if is_float {
            return match digits.parse() {
                Ok(value) => Ok(Tok::Float(value)),
                Err(_) => error(pos, format!("invalid float literal `{literal}`")),
            };
        }
        let digits = if radix == 10 { &digits[..] } else { &digits[2..] };
        match i64::from_str_radix(digits, radix) {
            Ok(value) => Ok(Tok::Int(value)),
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                error(pos, format!("integer literal `{literal}` does not fit in 64 bits"))
            }
            Err(_) => error(pos, format!("invalid integer literal `{literal}`")),
        }
    }

    fn string(&mut self) -> Result<Tok> {
        let pos = self.pos;
        self.bump(); // the opening quote
        let mut value = String::new();
        loop {
            let escape_pos = self.pos;
            match self.bump() {
                None | Some('\n') => return error(pos, "unterminated string literal"),
                Some('"') => return Ok(Tok::Str(value)),
                Some('\\') => value.push(match self.bump() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some(c @ ('"' | '\'' | '\\')) => c,
                    None | Some('\n') => return error(pos, "unterminated string literal"),
                    Some(c) => {
                        return error(
                            escape_pos,
                            format!("unknown escape `\\{}`", c.escape_debug()),
                        )
                    }
                }),
                Some(c) => value.push(c),
            }
        }
    }
}

// ---------------------------------------------------------------- parser

struct Parser<'a> {
    /// Always ends with `Tok::Eof`.
    tokens: Vec<Token<'a>>,
    at: usize,
    depth: usize,
}

/// Binding power of comparisons, which Zig does not let chain.
const COMPARISON: u8 = 3;

fn binary_op(spelling: &str) -> Option<(BinOp, u8)> {
    use BinOp::*;
    Some(match spelling {
        "or" => (Or, 1),
        "and" => (And, 2),
        "==" => (Eq, COMPARISON),
        "!=" => (Ne, COMPARISON),
        "<" => (Lt, COMPARISON),
        "<=" => (Le, COMPARISON),
        ">" => (Gt, COMPARISON),
        ">=" => (Ge, COMPARISON),
        "&" => (BitAnd, 4),
        "^" => (BitXor, 4),
        "|" => (BitOr, 4),
        "<<" => (Shl, 5),
        ">>" => (Shr, 5),
        "+" => (Add, 6),
        "-" => (Sub, 6),
        "*" => (Mul, 7),
        "/" => (Div, 7),
        "%" => (Rem, 7),
        _ => return None,
    })
}

/// The operator an assignment applies: `Some(None)` for plain `=`,
/// `Some(Some(Add))` for `+=`, `None` if `spelling` is no assignment.
fn assignment_op(spelling: &str) -> Option<Option<BinOp>> {
    use BinOp::*;
    let op = match spelling {
        "=" => return Some(None),
        "+=" => Add,
        "-=" => Sub,
        "*=" => Mul,
        "/=" => Div,
        "%=" => Rem,
        "<<=" => Shl,
        ">>=" => Shr,
        "&=" => BitAnd,
        "|=" => BitOr,
        "^=" => BitXor,
        _ => return None,
    };
    Some(Some(op))
}

fn binary_expr(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
    let pos = lhs.pos;
    Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), pos }
}

/// How an error message shows a token.
fn describe(token: &Token) -> String {
    const MAX_CHARS: usize = 32;
    match token.tok {
        Tok::Eof => "end of file".to_string(),
        _ if token.text.chars().count() > MAX_CHARS => {
            format!("`{}…`", token.text.chars().take(MAX_CHARS).collect::<String>())
        }
        _ => format!("`{}`", token.text),
    }
}

impl<'a> Parser<'a> {
    // ---- token access

    fn peek(&self) -> &Token<'a> {
        self.peek_nth(0)
    }

    /// The token `n` ahead; past the end, the end-of-file token.
    fn peek_nth(&self, n: usize) -> &Token<'a> {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.at + n).min(last)]
    }

    fn pos(&self) -> Pos {
        self.peek().pos
    }

    /// The keyword or punctuation mark ahead, if that is what it is.
    fn fixed(&self) -> Option<&'static str> {
        match self.peek().tok {
            Tok::Fixed(spelling) => Some(spelling),
            _ => None,
        }
    }

    fn is(&self, spelling: &str) -> bool {
        self.fixed() == Some(spelling)
    }

    fn advance(&mut self) {
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
    }

    fn eat(&mut self, spelling: &str) -> bool {
        let found = self.is(spelling);
        if found {
            self.advance();
        }
        found
    }

    /// An error at the next token: "`expected`, found `token`".
    fn fail<T>(&self, expected: impl fmt::Display) -> Result<T> {
        error(self.pos(), format!("{expected}, found {}", describe(self.peek())))
    }

    fn expect(&mut self, spelling: &str, context: impl fmt::Display) -> Result<Pos> {
        let pos = self.pos();
        if self.eat(spelling) {
            Ok(pos)
        } else {
            self.fail(format_args!("expected `{spelling}` {context}"))
        }
    }

    fn ident(&mut self, what: impl fmt::Display) -> Result<String> {
        match &self.peek().tok {
            Tok::Ident(name) => {
                let name = name.clone();
                self.advance();
                Ok(name)
            }
            _ => self.fail(format_args!("expected {what}")),
        }
    }

    /// Items separated by commas up to `close`, which is consumed; a
    /// trailing comma is fine.
    fn list<T>(
        &mut self,
        close: &str,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut items = Vec::new();
        while !self.eat(close) {
            items.push(item(self)?);
            if !self.eat(",") && !self.is(close) {
                return self.fail(format_args!("expected `,` or `{close}` after the {what}"));
            }
        }
        Ok(items)
    }

    /// Runs `parse` one nesting level deeper, failing past `MAX_DEPTH`.
    fn nested<T>(&mut self, parse: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return error(self.pos(), format!("nesting is deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    // ---- items and statements

    fn file(&mut self) -> Result<File> {
        let mut items = Vec::new();
        while self.peek().tok != Tok::Eof {
            items.push(self.item()?);
        }
        Ok(File { items })
    }

    fn item(&mut self) -> Result<Item> {
        let pos = self.pos();
        match self.fixed() {
            Some("param") => self.param(),
            Some("const" | "var") => Ok(Item::Decl(self.decl()?)),
            Some("fn") => self.function(),
            Some("task") => self.task(),
            Some("comptime") => {
                self.advance();
                Ok(Item::Comptime { body: self.block("the `comptime` block")?, pos })
            }
            Some("layout") => {
                self.advance();
                Ok(Item::Layout { body: self.block("the `layout` block")?, pos })
            }
            // A word: a misspelt or unsupported item, such as `export`.
            _ if self.peek().text.starts_with(is_ident_start) => {
                error(pos, format!("unknown top-level item {}", describe(self.peek())))
            }
            _ => self.fail(
                "expected a top-level item (`param`, `const`, `var`, `fn`, `task`, `comptime` or `layout`)",
            ),
        }
    }

    fn param(&mut self) -> Result<Item> {
        let pos = self.pos();
        self.advance();
        let name = self.ident("a parameter name after `param`")?;
        self.expect(":", format_args!("and a type after parameter `{name}`"))?;
        let ty = self.type_expr()?;
        let default = if self.eat("=") { Some(self.expr()?) } else { None };
        self.expect(";", "after the parameter declaration")?;
        Ok(Item::Param { name, ty, default, pos })
    }

    fn decl(&mut self) -> Result<Decl> {
        let pos = self.pos();
        let mutable = self.is("var");
        self.advance();
        let keyword = if mutable { "var" } else { "const" };
        let name = self.ident(format_args!("a name after `{keyword}`"))?;
        let ty = if self.eat(":") { Some(self.type_expr()?) } else { None };
        let init = if self.eat("=") { Some(self.expr()?) } else { None };
        if init.is_none() && !mutable {
            return self.fail(format_args!("expected `=` and a value for constant `{name}`"));
        }
        self.expect(";", "after the declaration")?;
        Ok(Decl { mutable, name, ty, init, pos })
    }

    fn function(&mut self) -> Result<Item> {
        let pos = self.pos();
        self.advance();
        let name = self.ident("a function name after `fn`")?;
        self.expect("(", format_args!("after the function name `{name}`"))?;
        let params = self.list(")", "parameter", |p| {
            let param = p.ident("a parameter name")?;
            p.expect(":", format_args!("and a type after parameter `{param}`"))?;
            Ok((param, p.type_expr()?))
        })?;
        if self.is("{") {
            return self.fail(format_args!("expected the return type of `{name}` (e.g. `void`)"));
        }
        let ret = self.type_expr()?;
        let body = self.block(format_args!("the body of `{name}`"))?;
        Ok(Item::Fn { name, params, ret, body, pos })
    }

    fn task(&mut self) -> Result<Item> {
        let pos = self.pos();
        self.advance();
        let name = self.ident("a task name after `task`")?;
        self.expect("(", format_args!("after the task name `{name}`"))?;
        self.expect(")", "(a task takes no parameters)")?;
        match &self.peek().tok {
            Tok::Ident(ret) if ret == "void" => self.advance(),
            _ => return self.fail("expected `void`, the return type of a task"),
        }
        let body = self.block(format_args!("the body of task `{name}`"))?;
        Ok(Item::Task { name, body, pos })
    }

    /// `{ statements }`; `what` names the block for error messages.
    fn block(&mut self, what: impl fmt::Display) -> Result<Block> {
        self.nested(|p| {
            let open = p.expect("{", format_args!("to open {what}"))?;
            let mut stmts = Vec::new();
            while !p.eat("}") {
                if p.peek().tok == Tok::Eof {
                    return p
                        .fail(format_args!("expected `}}` to close the block opened at {open}"));
                }
                stmts.push(p.stmt()?);
            }
            Ok(stmts)
        })
    }

    fn stmt(&mut self) -> Result<Stmt> {
        match self.fixed() {
            Some("const" | "var") => self.decl().map(Stmt::Decl),
            Some("if") => self.if_stmt(),
            Some("while") => self.while_stmt(),
            Some("return") => self.return_stmt(),
            Some("{") => self.block("a block").map(Stmt::Block),
            _ => {
                let stmt = self.simple_stmt()?;
                self.expect(";", "after the statement")?;
                Ok(stmt)
            }
        }
    }

    /// An assignment or an expression statement, without its `;` (it is
    /// also the step of a `while`).
    fn simple_stmt(&mut self) -> Result<Stmt> {
        let pos = self.pos();
        let target = self.expr()?;
        let Some(op) = self.fixed().and_then(assignment_op) else {
            return Ok(Stmt::Expr(target));
        };
        if !matches!(target.kind, ExprKind::Ident(_) | ExprKind::Field(..) | ExprKind::Index(..)) {
            return error(pos, "can only assign to a name, a field or an element");
        }
        self.advance();
        let value = self.expr()?;
        Ok(Stmt::Assign { target, op, value, pos })
    }

    fn if_stmt(&mut self) -> Result<Stmt> {
        // An `else if` chain nests, so it counts towards the depth limit.
        self.nested(|p| {
            let pos = p.pos();
            p.advance();
            let cond = p.condition("if")?;
            let then = p.block("the `if` body")?;
            let otherwise = if !p.eat("else") {
                None
            } else if p.is("if") {
                Some(vec![p.if_stmt()?])
            } else {
                Some(p.block("the `else` body")?)
            };
            Ok(Stmt::If { cond, then, otherwise, pos })
        })
    }

    fn return_stmt(&mut self) -> Result<Stmt> {
        let pos = self.pos();
        self.advance();
        let value = if self.is(";") { None } else { Some(self.expr()?) };
        self.expect(";", "after the `return` statement")?;
        Ok(Stmt::Return { value, pos })
    }

    fn while_stmt(&mut self) -> Result<Stmt> {
        let pos = self.pos();
        self.advance();
        let cond = self.condition("while")?;
        let step = self.loop_step()?;
        let body = self.block("the `while` body")?;
        Ok(Stmt::While { cond, step, body, pos })
    }

    /// The `: (step)` of a `while`, if there is one.
    fn loop_step(&mut self) -> Result<Option<Box<Stmt>>> {
        if !self.eat(":") {
            return Ok(None);
        }
        self.expect("(", "to open the loop step")?;
        let step = self.simple_stmt()?;
        self.expect(")", "after the loop step")?;
        Ok(Some(Box::new(step)))
    }

    /// `(cond)` after `if` or `while`.
    fn condition(&mut self, keyword: &str) -> Result<Expr> {
        self.expect("(", format_args!("after `{keyword}`"))?;
        let cond = self.expr()?;
        self.expect(")", format_args!("to close the `{keyword}` condition"))?;
        Ok(cond)
    }

    // ---- expressions
    //
    // Functions on the recursive path keep their frames small, handing
    // the rest to helpers: unoptimized builds give every temporary its own
    // stack slot, and `MAX_DEPTH` levels must fit in a 2 MiB thread stack.

    fn expr(&mut self) -> Result<Expr> {
        self.nested(|p| p.binary(1))
    }

    /// Precedence climbing over the operators binding at least `min_power`.
    fn binary(&mut self, min_power: u8) -> Result<Expr> {
        let mut lhs = self.unary()?;
        let mut after_comparison = false;
        while let Some((op, power)) = self.fixed().and_then(binary_op) {
            if power < min_power {
                break;
            }
            if power == COMPARISON && after_comparison {
                return error(self.pos(), "comparisons cannot be chained; add parentheses");
            }
            after_comparison = power == COMPARISON;
            self.reject_doubled_op()?;
            self.advance();
            let rhs = self.binary(power + 1)?;
            lhs = binary_expr(op, lhs, rhs);
        }
        Ok(lhs)
    }

    /// `&&` and `||` lex as two operators; C habits make them likely, so
    /// say what is meant instead of failing on the second one.
    fn reject_doubled_op(&self) -> Result<()> {
        let (op, next) = (self.peek(), self.peek_nth(1));
        let word = match op.text {
            "&" => "and",
            "|" => "or",
            _ => return Ok(()),
        };
        let adjacent =
            next.pos.line == op.pos.line && op.pos.col.checked_add(1) == Some(next.pos.col);
        if adjacent && next.text == op.text {
            let text = op.text;
            return error(op.pos, format!("`{text}{text}` is not an operator; use `{word}`"));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr> {
        let apply: fn(Box<Expr>) -> ExprKind = match self.fixed() {
            Some("-") => |e| ExprKind::Unary(UnOp::Neg, e),
            Some("!") => |e| ExprKind::Unary(UnOp::Not, e),
            Some("~") => |e| ExprKind::Unary(UnOp::BitNot, e),
            Some("&") => ExprKind::AddressOf,
            _ => return self.postfix(),
        };
        self.prefixed(apply)
    }

    /// The operand of a prefix operator, wrapped by `apply`.
    fn prefixed(&mut self, apply: fn(Box<Expr>) -> ExprKind) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        let operand = self.nested(Self::unary)?;
        Ok(Expr { kind: apply(Box::new(operand)), pos })
    }

    fn postfix(&mut self) -> Result<Expr> {
        let mut expr = self.primary()?;
        while let Some(spelling @ ("(" | "[" | ".")) = self.fixed() {
            self.advance();
            expr = self.postfix_op(spelling, expr)?;
        }
        Ok(expr)
    }

    /// The call, index or field access that `spelling` opened, on `base`.
    fn postfix_op(&mut self, spelling: &str, base: Expr) -> Result<Expr> {
        let pos = base.pos;
        let base = Box::new(base);
        let kind = match spelling {
            "(" => ExprKind::Call(base, self.list(")", "argument", Self::expr)?),
            "[" if self.is("]") => return self.fail("expected an index"),
            "[" => ExprKind::Index(base, self.list("]", "index", Self::expr)?),
            _ => ExprKind::Field(base, self.ident("a field name after `.`")?),
        };
        Ok(Expr { kind, pos })
    }

    // Only the leaves are parsed here: other forms get their own functions,
    // which keeps this frame, on every nesting level's path, small.
    fn primary(&mut self) -> Result<Expr> {
        let pos = self.pos();
        let kind = match &self.peek().tok {
            Tok::Int(value) => ExprKind::Int(*value),
            Tok::Float(value) => ExprKind::Float(*value),
            Tok::Str(value) => ExprKind::Str(value.clone()),
            Tok::Ident(name) => ExprKind::Ident(name.clone()),
            Tok::Fixed("true") => ExprKind::Bool(true),
            Tok::Fixed("false") => ExprKind::Bool(false),
            Tok::Builtin(name) => return self.builtin(name.clone()),
            Tok::Fixed("(") => return self.parenthesized(),
            Tok::Fixed(".") => return self.dotted(),
            Tok::Fixed("if") => return self.if_expr(),
            Tok::Fixed("|") => return self.tensor_access(),
            Tok::Fixed("[") => return self.array_type_or_init(),
            Tok::Fixed("*") => return self.pointer_type(),
            Tok::Fixed("fn") => return self.fn_type(),
            _ => return self.fail("expected an expression"),
        };
        self.advance();
        Ok(Expr { kind, pos })
    }

    /// `@name(args)`
    fn builtin(&mut self, name: String) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        self.expect("(", format_args!("after `@{name}`"))?;
        let args = self.list(")", "argument", Self::expr)?;
        Ok(Expr { kind: ExprKind::Builtin(name, args), pos })
    }

    fn parenthesized(&mut self) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        let inner = self.expr()?;
        self.expect(")", "to close the parenthesis")?;
        // The expression starts at its `(`.
        Ok(Expr { pos, ..inner })
    }

    /// `.{ ... }` or `.name`
    fn dotted(&mut self) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        let kind = if self.eat("{") {
            self.aggregate()?
        } else {
            ExprKind::EnumLiteral(self.ident("a name or `{` after `.`")?)
        };
        Ok(Expr { kind, pos })
    }

    /// `if (cond) a else b`
    fn if_expr(&mut self) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        let cond = self.condition("if")?;
        let then = self.expr()?;
        self.expect("else", "(an `if` expression needs an `else` branch)")?;
        let otherwise = self.expr()?;
        Ok(Expr { kind: ExprKind::If(Box::new(cond), Box::new(then), Box::new(otherwise)), pos })
    }

    /// An array type, with the elements after it if it is followed by `{`.
    fn array_type_or_init(&mut self) -> Result<Expr> {
        let ty = self.array_type()?;
        if !self.eat("{") {
            return Ok(ty);
        }
        let pos = ty.pos;
        let elems = self.list("}", "element", Self::expr)?;
        Ok(Expr { kind: ExprKind::ArrayInit(Box::new(ty), elems), pos })
    }

    /// The inside of `.{ ... }`: a struct if it starts `.name =`, else a tuple.
    fn aggregate(&mut self) -> Result<ExprKind> {
        let is_struct = self.is(".")
            && matches!(self.peek_nth(1).tok, Tok::Ident(_))
            && self.peek_nth(2).tok == Tok::Fixed("=");
        if !is_struct {
            return Ok(ExprKind::Tuple(self.list("}", "element", Self::expr)?));
        }
        Ok(ExprKind::Struct(self.list("}", "field", Self::field)?))
    }

    /// `.name = value` in a struct literal.
    fn field(&mut self) -> Result<(String, Expr)> {
        self.expect(".", "before the field name (a struct literal is `.{ .name = value }`)")?;
        let name = self.ident("a field name")?;
        self.expect("=", format_args!("after field `.{name}`"))?;
        let value = self.expr()?;
        Ok((name, value))
    }

    /// `|i, j|{m, n} -> body`; the body binds like a prefix operand.
    fn tensor_access(&mut self) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        let indices = self.list("|", "index name", |p| p.ident("an index name"))?;
        self.expect("{", "before the extents of the tensor access")?;
        let extents = self.list("}", "extent", Self::expr)?;
        if indices.is_empty() {
            return error(pos, "a tensor access needs at least one index");
        }
        if indices.len() != extents.len() {
            let (i, e) = (indices.len(), extents.len());
            return error(
                pos,
                format!("the tensor access has {i} index name(s) but {e} extent(s)"),
            );
        }
        self.expect("->", "after the extents of the tensor access")?;
        let body = Box::new(self.nested(Self::unary)?);
        Ok(Expr { kind: ExprKind::TensorAccess { indices, extents, body }, pos })
    }

    /// A type where one is expected: unlike in an expression, an array type
    /// here is never followed by an initializer (`fn f() [2]u16 { ... }`).
    fn type_expr(&mut self) -> Result<Expr> {
        self.nested(|p| match p.fixed() {
            Some("[") => p.array_type(),
            Some("*") => p.pointer_type(),
            Some("fn") => p.fn_type(),
            _ => p.postfix(),
        })
    }

    /// `[n]T`, `[m, n]T` or `[*]T`.
    fn array_type(&mut self) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        let kind = if self.eat("*") {
            self.expect("]", "after `[*`")?;
            ExprKind::ManyPointerType(Box::new(self.type_expr()?))
        } else {
            if self.is("]") {
                return self.fail("expected an array length or `*` after `[`");
            }
            let dims = self.list("]", "array length", Self::expr)?;
            ExprKind::ArrayType(dims, Box::new(self.type_expr()?))
        };
        Ok(Expr { kind, pos })
    }

    /// `*T`
    fn pointer_type(&mut self) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        let kind = ExprKind::PointerType(Box::new(self.type_expr()?));
        Ok(Expr { kind, pos })
    }

    /// `fn(A, B) R`
    fn fn_type(&mut self) -> Result<Expr> {
        let pos = self.pos();
        self.advance();
        self.expect("(", "after `fn` in a function type")?;
        let params = self.list(")", "parameter type", Self::type_expr)?;
        let ret = self.type_expr()?;
        Ok(Expr { kind: ExprKind::FnType(params, Box::new(ret)), pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// csl-examples style `pe_program.csl`.
    const PE_PROGRAM: &str = r#"// y[i] = y[i] + a[i] * s, as one fmacs over memory DSDs, started by a task.

param memcpy_params: comptime_struct;
param n: i16;
param pe_x: i16;

const sys_mod = @import_module("<memcpy/memcpy>", memcpy_params);

const main_task_id: local_task_id = @get_local_task_id(9);

var a = @zeros([n]f32);
var b: [n, 2]f32; // 2-D array: exercises CSL multi-dim syntax
var y = @zeros([n]f32);
var s: f32 = 2.0;

var a_ptr: [*]f32 = &a;
var y_ptr: [*]f32 = &y;

const a_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{n} -> a[i] });
const b_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{n} -> b[i, 0] });
const y_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{n} -> y[i] });

task main_task() void {
  // y = y + a * s
  @fmacs(y_dsd, y_dsd, a_dsd, s);
  /// y = y + b[:, 0]
  @fadds(y_dsd, y_dsd, b_dsd);
  sys_mod.unblock_cmd_stream();
}

fn compute() void {
  s = @as(f32, pe_x + 1);
  @activate(main_task_id);
}

comptime {
  @bind_local_task(main_task, main_task_id);

  @export_symbol(a_ptr, "a");
  @export_symbol(y_ptr, "y");
  @export_symbol(compute);
}
"#;

    /// csl-examples style `layout.csl`.
    const LAYOUT: &str = r#"// 4x1 grid of PEs; every PE runs pe_program.csl and gets its own slice.

param width: i16 = 4;
param height: i16 = 1;
param n: i16;

const LAUNCH: color = @get_color(8);

const memcpy = @import_module("<memcpy/get_params>", .{
  .width = width,
  .height = height,
  .LAUNCH = LAUNCH,
});

layout {
  @set_rectangle(width, height);

  var x: i16 = 0;
  while (x < width) : (x += 1) {
    const params = .{
      .memcpy_params = memcpy.get_params(x),
      .n = n,
      .pe_x = x,
    };
    @set_tile_code(x, 0, "pe_program.csl", params);
    if (x == 0) {
      @set_color_config(x, 0, LAUNCH, .{ .routes = .{ .rx = .{RAMP}, .tx = .{EAST} } });
    } else if (x == width - 1) {
      @set_color_config(x, 0, LAUNCH, .{ .routes = .{ .rx = .{WEST}, .tx = .{RAMP} } });
    } else {
      @set_color_config(x, 0, LAUNCH, .{ .routes = .{ .rx = .{WEST}, .tx = .{RAMP, EAST} } });
    }
  }

  @export_name("a", [*]f32, true);
  @export_name("y", [*]f32, false);
  @export_name("compute", fn()void);
}
"#;

    /// An expression as a compact S-expression, to compare tree shapes.
    fn show(e: &Expr) -> String {
        use ExprKind::*;
        let spaced = |es: &[Expr]| es.iter().map(|e| format!(" {}", show(e))).collect::<String>();
        let commas = |es: &[Expr]| es.iter().map(show).collect::<Vec<_>>().join(", ");
        match &e.kind {
            Int(v) => v.to_string(),
            Float(v) => format!("{v:?}"),
            Bool(v) => v.to_string(),
            Str(s) => format!("{s:?}"),
            Ident(name) => name.clone(),
            Field(base, name) => format!("{}.{name}", show(base)),
            Index(base, at) => format!("{}[{}]", show(base), commas(at)),
            Call(callee, args) => format!("(call {}{})", show(callee), spaced(args)),
            Builtin(name, args) => format!("(@{name}{})", spaced(args)),
            Struct(fields) => {
                let fields: String =
                    fields.iter().map(|(n, e)| format!(" .{n}={}", show(e))).collect();
                format!("(struct{fields})")
            }
            Tuple(elems) => format!("(tuple{})", spaced(elems)),
            EnumLiteral(name) => format!(".{name}"),
            Unary(op, e) => format!("({op:?} {})", show(e)),
            Binary(op, l, r) => format!("({} {} {})", op_text(*op), show(l), show(r)),
            If(c, t, o) => format!("(if {} {} {})", show(c), show(t), show(o)),
            TensorAccess { indices, extents, body } => {
                format!("(|{}| {{{}}} {})", indices.join(", "), commas(extents), show(body))
            }
            ArrayType(dims, elem) => format!("[{}]{}", commas(dims), show(elem)),
            ManyPointerType(elem) => format!("[*]{}", show(elem)),
            PointerType(elem) => format!("*{}", show(elem)),
            AddressOf(e) => format!("&{}", show(e)),
            FnType(params, ret) => format!("(fn ({}) {})", commas(params), show(ret)),
            ArrayInit(ty, elems) => format!("({} {{{}}})", show(ty), commas(elems)),
        }
    }

    fn op_text(op: BinOp) -> &'static str {
        let spellings = PUNCTUATION.iter().chain(&["and", "or"]);
        spellings.copied().find(|s| binary_op(s).is_some_and(|(o, _)| o == op)).unwrap_or("?")
    }

    fn parse_ok(text: &str) -> File {
        parse_file(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The statements of `text` as a function body.
    fn body(text: &str) -> Block {
        match parse_ok(&format!("fn f() void {{\n{text}\n}}")).items.remove(0) {
            Item::Fn { body, .. } => body,
            item => panic!("not a function: {item:?}"),
        }
    }

    /// `text` as the value of a constant, shown.
    fn expr(text: &str) -> String {
        match parse_ok(&format!("const c = {text};")).items.remove(0) {
            Item::Decl(Decl { init: Some(init), .. }) => show(&init),
            item => panic!("not a constant: {item:?}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse_file(text) {
            Ok(file) => panic!("parsed, expected an error: {file:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn decl(item: &Item) -> &Decl {
        match item {
            Item::Decl(decl) => decl,
            _ => panic!("not a declaration: {item:?}"),
        }
    }

    #[test]
    fn pe_program_parses() {
        let file = parse_ok(PE_PROGRAM);
        assert_eq!(file.items.len(), 17);
        assert!(
            matches!(&file.items[0], Item::Param { name, default: None, .. } if name == "memcpy_params")
        );
        let b = decl(&file.items[6]);
        assert!(b.mutable && b.init.is_none());
        assert_eq!(show(b.ty.as_ref().unwrap()), "[n, 2]f32");
        let a_ptr = decl(&file.items[9]);
        assert_eq!(show(a_ptr.ty.as_ref().unwrap()), "[*]f32");
        assert_eq!(show(a_ptr.init.as_ref().unwrap()), "&a");
        assert_eq!(
            show(decl(&file.items[12]).init.as_ref().unwrap()),
            "(@get_dsd mem1d_dsd (struct .tensor_access=(|i| {n} b[i, 0])))"
        );
        let Item::Task { name, body, pos } = &file.items[14] else { panic!("not a task") };
        assert_eq!((name.as_str(), body.len(), *pos), ("main_task", 3, Pos { line: 23, col: 1 }));
        assert!(
            matches!(&body[2], Stmt::Expr(e) if show(e) == "(call sys_mod.unblock_cmd_stream)")
        );
        let Item::Fn { body, ret, params, .. } = &file.items[15] else { panic!("not a fn") };
        assert!(params.is_empty());
        assert_eq!(show(ret), "void");
        let Stmt::Assign { target, op: None, value, .. } = &body[0] else {
            panic!("not an assignment")
        };
        assert_eq!((show(target), show(value)), ("s".into(), "(@as f32 (+ pe_x 1))".into()));
        assert!(matches!(&file.items[16], Item::Comptime { body, .. } if body.len() == 4));
    }

    #[test]
    fn layout_parses() {
        let file = parse_ok(LAYOUT);
        assert_eq!(file.items.len(), 6);
        assert_eq!(
            show(decl(&file.items[4]).init.as_ref().unwrap()),
            r#"(@import_module "<memcpy/get_params>" (struct .width=width .height=height .LAUNCH=LAUNCH))"#
        );
        let Item::Layout { body, .. } = &file.items[5] else { panic!("not a layout") };
        let Stmt::Expr(export) = &body[5] else { panic!("not an expression statement") };
        assert_eq!(show(export), r#"(@export_name "compute" (fn () void))"#);
        let Stmt::While { cond, step: Some(step), body, .. } = &body[2] else {
            panic!("not a while")
        };
        assert_eq!(show(cond), "(< x width)");
        assert!(
            matches!(&**step, Stmt::Assign { op: Some(BinOp::Add), value, .. } if show(value) == "1")
        );
        let Stmt::Decl(params) = &body[0] else { panic!("not a declaration") };
        assert_eq!(
            show(params.init.as_ref().unwrap()),
            "(struct .memcpy_params=(call memcpy.get_params x) .n=n .pe_x=x)"
        );
        // The else-if chain nests: else { if ... else { ... } }.
        let Stmt::If { cond, otherwise: Some(otherwise), .. } = &body[2] else {
            panic!("not an if")
        };
        assert_eq!(show(cond), "(== x 0)");
        let [Stmt::If { cond, otherwise: Some(last), .. }] = &otherwise[..] else {
            panic!("no else if")
        };
        assert_eq!(show(cond), "(== x (- width 1))");
        let [Stmt::Expr(Expr { kind: ExprKind::Builtin(_, args), .. })] = &last[..] else {
            panic!("no final else")
        };
        assert_eq!(
            show(&args[3]),
            "(struct .routes=(struct .rx=(tuple WEST) .tx=(tuple RAMP EAST)))"
        );
    }

    #[test]
    fn precedence_follows_zig() {
        for (text, tree) in [
            ("a + b * c", "(+ a (* b c))"),
            ("a - b - c", "(- (- a b) c)"),
            ("(x >> 2) & 15", "(& (>> x 2) 15)"),
            ("r & 3 << 2", "(& r (<< 3 2))"),
            ("x & 1 == 0", "(== (& x 1) 0)"),
            ("a | b ^ c & d", "(& (^ (| a b) c) d)"),
            ("a < b and c or !d", "(or (and (< a b) c) (Not d))"),
            ("-a * ~b % c", "(% (* (Neg a) (BitNot b)) c)"),
            ("&x.y[1]", "&x.y[1]"),
            ("lo | (hi << 2)", "(| lo (<< hi 2))"),
            (
                "(codes[at + (r >> 2)] >> @as(u16, (r & 3) << 2)) & 15",
                "(& (>> codes[(+ at (>> r 2))] (@as u16 (<< (& r 3) 2))) 15)",
            ),
            ("if (a > 0) a else -a + 1", "(if (> a 0) a (+ (Neg a) 1))"),
            ("f(a, b,)(c)[i, j].k", "(call (call f a b) c)[i, j].k"),
        ] {
            assert_eq!(expr(text), tree, "{text}");
        }
    }

    #[test]
    fn literals_and_types() {
        for (text, tree) in [
            ("0x1F_ff + 0b101 + 0o17 + 1_000", "(+ (+ (+ 8191 5) 15) 1000)"),
            ("15.0 + 1e-5 + 2.5e3 + 1E2", "(+ (+ (+ 15.0 1e-5) 2500.0) 100.0)"),
            (r#""a\"b\\c\n""#, r#""a\"b\\c\n""#),
            ("true and false", "(and true false)"),
            (".{}", "(tuple)"),
            (".{ .RAMP, EAST, }", "(tuple .RAMP EAST)"),
            ("@zeros([m * 2]f32)", "(@zeros [(* m 2)]f32)"),
            ("@ptrcast(*u16, [*]f32)", "(@ptrcast *u16 [*]f32)"),
            ("[2]color{ c0, c1 }", "([2]color {c0, c1})"),
            ("[2][3]u8{}", "([2][3]u8 {})"),
            ("fn(i16, [*]f32) void", "(fn (i16, [*]f32) void)"),
            ("|i, j|{m, n} -> x[2*i + 1, j]", "(|i, j| {m, n} x[(+ (* 2 i) 1), j])"),
        ] {
            assert_eq!(expr(text), tree, "{text}");
        }
        let file = parse_ok("fn g(a: *f32, b: [4]i16) [2]u16 { return; }\nparam p: [*]f32 = a;");
        let Item::Fn { params, ret, body, .. } = &file.items[0] else { panic!("not a fn") };
        assert_eq!(show(&params[0].1), "*f32");
        assert_eq!(show(&params[1].1), "[4]i16");
        assert_eq!(show(ret), "[2]u16");
        assert_eq!(body, &vec![Stmt::Return { value: None, pos: Pos { line: 1, col: 35 } }]);
    }

    #[test]
    fn statements() {
        let stmts = body(
            "var i: i16 = 0;\nwhile (i < 4) { i <<= 1; }\nwhile (true) : (f(i)) {}\n{ x[i] ^= 3; }\nreturn i % 2;",
        );
        assert_eq!(stmts.len(), 5);
        assert!(matches!(&stmts[1], Stmt::While { step: None, body, .. }
            if matches!(&body[..], [Stmt::Assign { op: Some(BinOp::Shl), .. }])));
        assert!(matches!(&stmts[2], Stmt::While { step: Some(step), .. }
            if matches!(&**step, Stmt::Expr(e) if show(e) == "(call f i)")));
        assert!(matches!(&stmts[3], Stmt::Block(b)
            if matches!(&b[..], [Stmt::Assign { op: Some(BinOp::BitXor), target, .. }] if show(target) == "x[i]")));
        assert!(
            matches!(&stmts[4], Stmt::Return { value: Some(v), pos } if show(v) == "(% i 2)" && pos.line == 6)
        );
    }

    #[test]
    fn positions_are_first_tokens() {
        let file = parse_ok("param a: i16;\n\nfn f() void {\n  x.y = (1 + 2) * a;\n}");
        assert_eq!(
            file.items[0],
            Item::Param {
                name: "a".into(),
                ty: Expr { kind: ExprKind::Ident("i16".into()), pos: Pos { line: 1, col: 10 } },
                default: None,
                pos: Pos { line: 1, col: 1 },
            }
        );
        let Item::Fn { body, pos, .. } = &file.items[1] else { panic!("not a fn") };
        assert_eq!(*pos, Pos { line: 3, col: 1 });
        let Stmt::Assign { target, value, pos, .. } = &body[0] else { panic!("not an assignment") };
        assert_eq!((pos.col, target.pos.col, value.pos.col), (3, 3, 9));
        let ExprKind::Binary(_, lhs, rhs) = &value.kind else { panic!("not binary") };
        assert_eq!((lhs.pos.col, rhs.pos.col), (9, 19));
    }

    #[test]
    fn errors_say_where_and_what() {
        for (text, message) in [
            ("fn f() void {\n  x = 1\n}", "3:1: expected `;` after the statement, found `}`"),
            ("param a: i16;\n\nfoo bar;", "3:1: unknown top-level item `foo`"),
            ("}", "1:1: expected a top-level item (`param`, `const`, `var`, `fn`, `task`, `comptime` or `layout`), found `}`"),
            ("layout {\n  f(1);\n", "3:1: expected `}` to close the block opened at 1:8, found end of file"),
            ("const x: i16;", "1:13: expected `=` and a value for constant `x`, found `;`"),
            ("param p = 1;", "1:9: expected `:` and a type after parameter `p`, found `=`"),
            ("task t(x: u32) void {}", "1:8: expected `)` (a task takes no parameters), found `x`"),
            ("task t() i16 {}", "1:10: expected `void`, the return type of a task, found `i16`"),
            ("fn f() { }", "1:8: expected the return type of `f` (e.g. `void`), found `{`"),
            ("const c = a == b == c;", "1:18: comparisons cannot be chained; add parentheses"),
            ("const c = a && b;", "1:13: `&&` is not an operator; use `and`"),
            ("const c = a || b;", "1:13: `||` is not an operator; use `or`"),
            ("const c = f(a b);", "1:15: expected `,` or `)` after the argument, found `b`"),
            ("const c = |i, j|{n} -> x[i];", "1:11: the tensor access has 2 index name(s) but 1 extent(s)"),
            ("const c = ||{} -> x;", "1:11: a tensor access needs at least one index"),
            ("const c = .{ .a = 1, 2 };", "1:22: expected `.` before the field name (a struct literal is `.{ .name = value }`), found `2`"),
            ("const c = if (a) b;", "1:19: expected `else` (an `if` expression needs an `else` branch), found `;`"),
            ("const c = x[];", "1:13: expected an index, found `]`"),
            ("const c = []f32;", "1:12: expected an array length or `*` after `[`, found `]`"),
            ("fn f() void { f() = 1; }", "1:15: can only assign to a name, a field or an element"),
            ("fn f() void { while (a) : (i += 1;) {} }", "1:34: expected `)` after the loop step, found `;`"),
            ("const s = \"abc\n\";", "1:11: unterminated string literal"),
            ("const s = \"a\\qb\";", "1:13: unknown escape `\\q`"),
            ("const n = 12ab;", "1:13: unexpected `a` in a number literal"),
            ("const n = 0x;", "1:11: invalid integer literal `0x`"),
            ("const n = 9223372036854775808;", "1:11: integer literal `9223372036854775808` does not fit in 64 bits"),
            ("const c = a # b;", "1:13: unexpected character `#`"),
            ("const c = a b;\n#", "1:13: expected `;` after the declaration, found `b`"),
            ("const c = (a;\n#", "1:13: expected `)` to close the parenthesis, found `;`"),
            ("const c = (a #", "1:14: unexpected character `#`"),
            ("const c = @ x;", "1:11: expected a builtin name after `@`"),
            ("const c = @f;", "1:13: expected `(` after `@f`, found `;`"),
            ("const c = 1 +", "1:14: expected an expression, found end of file"),
            ("const c = \"a very long string literal that goes on\" 1;", "1:53: expected `;` after the declaration, found `1`"),
            ("const c = 1 \"a very long string literal that goes on and on\";", "1:13: expected `;` after the declaration, found `\"a very long string literal that…`"),
        ] {
            assert_eq!(parse_err(text), message, "{text}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        // Test threads have 2 MiB stacks: the limit must keep parsing within them.
        let nest =
            |open: &str, close: &str, n: usize| format!("{}x{}", open.repeat(n), close.repeat(n));
        for (open, close) in [
            ("(", ")"),
            ("-", ""),
            ("f(", ")"),
            (".{ .a = ", " }"),
            ("[1]", ""),
            ("if (a) b else ", ""),
            ("|i|{n} -> ", ""),
        ] {
            assert!(
                parse_file(&format!("const c = {};", nest(open, close, 250))).is_ok(),
                "{open}"
            );
            let too_deep = format!("const c = {};", nest(open, close, 10_000));
            assert!(parse_err(&too_deep).ends_with("nesting is deeper than 256 levels"), "{open}");
        }
        for (open, close) in [("{ ", " }"), ("while (a) { ", " }"), ("if (a) {} else ", "")] {
            let body = |n| format!("fn f() void {{ {} }}", nest(open, close, n).replace('x', "{}"));
            assert!(parse_file(&body(250)).is_ok(), "{open}");
            assert!(
                parse_err(&body(10_000)).ends_with("nesting is deeper than 256 levels"),
                "{open}"
            );
        }
    }

    #[test]
    fn never_panics() {
        // Every prefix of a valid file parses or fails cleanly.
        for text in [PE_PROGRAM, LAYOUT] {
            for (end, _) in text.char_indices() {
                let _ = parse_file(&text[..end]);
            }
        }
        // Random characters, and random shuffles of CSL's tokens.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let chars: Vec<char> = "aZ_09 .,;:(){}[]<>=!&|^~+-*/%@\"\\\n#é".chars().collect();
        let words: Vec<&str> =
            PE_PROGRAM.split_whitespace().chain(LAYOUT.split_whitespace()).collect();
        for _ in 0..3000 {
            let garbage: String = (0..random(80)).map(|_| chars[random(chars.len())]).collect();
            let _ = parse_file(&garbage);
            let soup: Vec<&str> = (0..random(60)).map(|_| words[random(words.len())]).collect();
            let _ = parse_file(&soup.join(" "));
        }
    }
}
