//! Recursive descent over the tokens: `or` binds loosest, then `and`, then `not`.

use memchr::memmem;
use regex::bytes::Regex;

use super::lex::{Spanned, Token};
use super::{Cmp, ConditionError, Expr, Field, Level, Literal, Test};

pub(super) struct Parser<'a> {
    tokens: &'a [Spanned],
    next: usize,
    /// Where the text ends (the position of "end of condition" errors).
    end: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(tokens: &'a [Spanned], end: usize) -> Self {
        Parser {
            tokens,
            next: 0,
            end,
        }
    }

    pub(super) fn condition(mut self) -> Result<Expr, ConditionError> {
        let expr = self.or()?;
        match self.tokens.get(self.next) {
            None => Ok(expr),
            Some((_, pos)) => Err(ConditionError::at(*pos, "expected `and`, `or` or the end")),
        }
    }

    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.next).map(|(t, _)| t)
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(_, p)| *p)
    }

    fn take(&mut self) -> Option<&'a Spanned> {
        let t = self.tokens.get(self.next);
        self.next += usize::from(t.is_some());
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w == word);
        self.next += usize::from(found);
        found
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), ConditionError> {
        if self.peek() == Some(&token) {
            self.next += 1;
            Ok(())
        } else {
            Err(ConditionError::at(self.pos(), format!("expected {what}")))
        }
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut terms = vec![self.and()?];
        while self.keyword("or") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Any(merge_regexes(terms))
        })
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut terms = vec![self.unary()?];
        while self.keyword("and") {
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::All(terms)
        })
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::LParen) {
            self.next += 1;
            let inner = self.or()?;
            self.expect(Token::RParen, "`)`")?;
            return Ok(inner);
        }
        if self.keyword("exists") {
            self.expect(Token::LParen, "`(` after `exists`")?;
            let field = self.field()?;
            self.expect(Token::RParen, "`)`")?;
            return Ok(Expr::Exists(field));
        }
        self.test()
    }

    fn field(&mut self) -> Result<Field, ConditionError> {
        match self.take() {
            Some((Token::Word(w), pos)) if !is_reserved(w) => Field::named(w, *pos),
            Some((_, pos)) => Err(ConditionError::at(*pos, "expected a field name")),
            None => Err(ConditionError::at(self.end, "expected a field name")),
        }
    }

    /// `FIELD OP VALUE`.
    fn test(&mut self) -> Result<Expr, ConditionError> {
        let field = self.field()?;
        let op_pos = self.pos();
        let test = match self.take().map(|(t, _)| t) {
            Some(Token::Op(op)) => self.comparison(&field, op)?,
            Some(Token::Word(w)) if w == "contains" => Test::Contains(Box::new(self.finder()?)),
            Some(Token::Word(w)) if w == "startswith" => Test::StartsWith(self.text()?.into_bytes()),
            Some(Token::Word(w)) if w == "endswith" => Test::EndsWith(self.text()?.into_bytes()),
            Some(Token::Word(w)) if w == "matches" => Test::Matches(self.regex()?),
            Some(Token::Word(w)) if w == "in" => Test::In(self.list(&field)?),
            _ => {
                return Err(ConditionError::at(
                    op_pos,
                    "expected an operator (==, !=, <, <=, >, >=, contains, startswith, endswith, matches, in)",
                ))
            }
        };
        if field.is_level() && !matches!(test, Test::Compare(..) | Test::In(_)) {
            return Err(ConditionError::at(
                op_pos,
                "severity and facility compare with ==, !=, <, <=, >, >= or in",
            ));
        }
        Ok(Expr::Test(field, test))
    }

    fn comparison(&mut self, field: &Field, op: &'static str) -> Result<Test, ConditionError> {
        let pos = self.pos();
        let value = self.literal(field)?;
        let cmp = match op {
            "==" => Cmp::Eq,
            "!=" => Cmp::Ne,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            _ => Cmp::Ge,
        };
        let ordered = !matches!(cmp, Cmp::Eq | Cmp::Ne);
        if ordered && matches!(value, Literal::Str(_)) {
            return Err(ConditionError::at(
                pos,
                format!("`{op}` compares numbers (or severity levels)"),
            ));
        }
        Ok(Test::Compare(cmp, value))
    }

    /// A string or number; for severity and facility also a level name.
    fn literal(&mut self, field: &Field) -> Result<Literal, ConditionError> {
        let pos = self.pos();
        let literal = match self.take().map(|(t, _)| t) {
            Some(Token::Str(s)) => Literal::Str(s.clone().into_bytes()),
            Some(Token::Num(n)) => Literal::Num(*n),
            Some(Token::Word(w)) if field.is_level() => Literal::Str(w.clone().into_bytes()),
            _ => return Err(ConditionError::at(pos, "expected a string or a number")),
        };
        match field.level() {
            Some(level) => level_literal(level, literal, pos),
            None => Ok(literal),
        }
    }

    fn text(&mut self) -> Result<String, ConditionError> {
        match self.take() {
            Some((Token::Str(s), _)) => Ok(s.clone()),
            Some((_, pos)) => Err(ConditionError::at(*pos, "expected a string")),
            None => Err(ConditionError::at(self.end, "expected a string")),
        }
    }

    fn finder(&mut self) -> Result<memmem::Finder<'static>, ConditionError> {
        Ok(memmem::Finder::new(self.text()?.as_bytes()).into_owned())
    }

    fn regex(&mut self) -> Result<Regex, ConditionError> {
        let pos = self.pos();
        let pattern = self.text()?;
        Regex::new(&pattern).map_err(|e| ConditionError::at(pos, format!("bad regex: {e}")))
    }

    /// `[lit, lit, …]`.
    fn list(&mut self, field: &Field) -> Result<Vec<Literal>, ConditionError> {
        self.expect(Token::LBracket, "`[` after `in`")?;
        let mut items = vec![self.literal(field)?];
        while self.peek() == Some(&Token::Comma) {
            self.next += 1;
            items.push(self.literal(field)?);
        }
        self.expect(Token::RBracket, "`,` or `]`")?;
        Ok(items)
    }
}

fn is_reserved(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "not" | "exists" | "contains" | "startswith" | "endswith" | "matches" | "in"
    )
}

/// A severity or facility operand as its number: a name (`warning`, `local0`) or a number.
fn level_literal(level: Level, literal: Literal, pos: usize) -> Result<Literal, ConditionError> {
    let code = match literal {
        Literal::Num(n) if n.fract() == 0.0 && (0.0..=f64::from(level.max())).contains(&n) => n,
        Literal::Num(_) => {
            return Err(ConditionError::at(
                pos,
                format!("{} is 0 to {}", level.name(), level.max()),
            ))
        }
        Literal::Str(name) => {
            let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
            let code = level.code_of(&name).ok_or_else(|| {
                ConditionError::at(pos, format!("`{name}` is not a {} name", level.name()))
            })?;
            f64::from(code)
        }
    };
    Ok(Literal::Num(code))
}

/// `f matches "a" or f matches "b" or …` on one field becomes one `RegexSet` test: one pass
/// over the value instead of one per regex.
fn merge_regexes(terms: Vec<Expr>) -> Vec<Expr> {
    let mut out: Vec<Expr> = Vec::with_capacity(terms.len());
    let mut groups: Vec<(Field, Vec<String>)> = Vec::new();
    for term in terms {
        match term {
            Expr::Test(field, Test::Matches(regex)) => {
                match groups.iter_mut().find(|(f, _)| *f == field) {
                    Some((_, patterns)) => patterns.push(regex.as_str().to_string()),
                    None => groups.push((field, vec![regex.as_str().to_string()])),
                }
            }
            other => out.push(other),
        }
    }
    for (field, patterns) in groups {
        let test = match patterns.as_slice() {
            [one] => Regex::new(one).ok().map(Test::Matches),
            _ => regex::bytes::RegexSet::new(&patterns)
                .ok()
                .map(Test::MatchesAny),
        };
        // Each pattern compiled alone already, so together they compile too.
        if let Some(test) = test {
            out.push(Expr::Test(field, test));
        }
    }
    out
}
