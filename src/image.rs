//! Which image a delegate runs: pinned by `Image`, or following Harness's latest supported
//! version (`ImageUpgrade: LatestSupported`). Owns the image properties' rules, the choice a
//! Create or Update makes, and the decision an upgrade run makes for one delegate; all pure.
//! Asking Harness is the `harness` module's; reading the key, `secrets`'; the run, `upgrade`'s.

use std::cmp::Ordering;

use crate::harness::{DelegateVersion, HarnessError, LatestSupported};
use crate::model::string_enum;

/// A problem with one image property: the property, and what to do.
pub type Problem = (&'static str, String);

/// Harness's public delegate repository on Docker Hub.
pub const DEFAULT_REPOSITORY: &str = "harness/delegate";

string_enum! {
    /// Whether the function keeps the delegate's image current.
    #[derive(Default)]
    pub enum ImageUpgrade { #[default] Off = "Off", LatestSupported = "LatestSupported" }
}

/// What a delegate's image follows, as the stack declared it, when it gave an API key: kept in
/// the record, so that an upgrade run knows what to ask Harness and where the image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Follow {
    pub upgrade: ImageUpgrade,
    /// The Secrets Manager secret holding the Harness API key.
    pub api_key_secret: String,
    pub manager: String,
    pub account_id: String,
    pub repository: String,
    pub minimal: bool,
    /// The image the committed revision runs.
    pub image: String,
}

impl Follow {
    /// The version the committed revision runs, from its tag.
    pub fn running(&self) -> Option<DelegateVersion> {
        DelegateVersion::of_image(&self.image)
    }

    /// The image of `latest` in this delegate's repository and variant.
    pub fn image_of(&self, latest: &LatestSupported) -> (String, DelegateVersion) {
        image_in(&self.repository, self.minimal, latest)
    }
}

/// The image of Harness's latest supported version in `repository`, regular or minimal.
pub fn image_in(
    repository: &str,
    minimal: bool,
    latest: &LatestSupported,
) -> (String, DelegateVersion) {
    let v = if minimal {
        latest.minimal.clone()
    } else {
        latest.version.clone()
    };
    (format!("{repository}:{v}"), v)
}

/// The image properties as given.
#[derive(Debug, Clone, Default)]
pub struct ImageProperties {
    pub image: Option<String>,
    pub upgrade: Option<ImageUpgrade>,
    pub repository: Option<String>,
    pub minimal: Option<bool>,
    pub api_key_secret: Option<String>,
}

/// The image properties' rules; `Ok`: the mode in force (`LatestSupported` when a key is given
/// and nothing pins the image) and the repository.
pub fn check(props: &ImageProperties, p: &mut Vec<Problem>) -> (ImageUpgrade, String) {
    let upgrade =
        props
            .upgrade
            .unwrap_or(if props.api_key_secret.is_some() && props.image.is_none() {
                ImageUpgrade::LatestSupported
            } else {
                ImageUpgrade::Off
            });
    let repository = props
        .repository
        .clone()
        .unwrap_or_else(|| DEFAULT_REPOSITORY.to_string());
    if let Some(arn) = &props.api_key_secret {
        if !crate::secrets::is_secret_arn(arn) {
            p.push((
                "HarnessApiKeySecretArn",
                "must be a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>) whose value is the Harness API key".into(),
            ));
        }
    }
    if let Some(image) = &props.image {
        let pins = |what: &str| {
            format!("{what} applies to the image the function chooses, but Image pins {image}: remove Image to follow Harness's latest supported version, or remove {what} to keep the pin")
        };
        if upgrade == ImageUpgrade::LatestSupported {
            p.push((
                "ImageUpgrade",
                format!("LatestSupported follows Harness's versions, but Image pins {image}: remove Image (the function then picks the version), or set ImageUpgrade to Off to keep the pin"),
            ));
        }
        if props.repository.is_some() {
            p.push(("ImageRepository", pins("ImageRepository")));
        }
        if props.minimal == Some(true) {
            p.push(("MinimalImage", pins("MinimalImage")));
        }
    } else if upgrade == ImageUpgrade::Off && props.minimal == Some(true) {
        p.push((
                "MinimalImage",
            "the minimal image has no \"latest\" tag to install without a version: set HarnessApiKeySecretArn (the function then follows the latest supported minimal version), or pin Image to a .minimal tag".into(),
        ));
    }
    if upgrade == ImageUpgrade::LatestSupported && props.api_key_secret.is_none() {
        p.push((
                "HarnessApiKeySecretArn",
            "is required with ImageUpgrade LatestSupported: the function asks Harness for the latest supported version with this key (README: \"Keeping the delegate current\"); or set ImageUpgrade to Off".into(),
        ));
    }
    check_repository(&repository, p);
    (upgrade, repository)
}

/// A repository names an image without its tag or digest, in the lower case registries take.
fn check_repository(repository: &str, p: &mut Vec<Problem>) {
    let last = repository.rsplit('/').next().unwrap_or_default();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c);
    if repository.is_empty()
        || last.contains(':')
        || !repository.chars().all(allowed)
        || repository.ends_with('/')
    {
        p.push((
                "ImageRepository",
            format!("\"{repository}\" must name a repository in lower case without a tag or digest, e.g. harness/delegate or 123456789012.dkr.ecr.eu-west-1.amazonaws.com/harness/delegate"),
        ));
    }
}

/// The image a Create or Update installs when the delegate follows Harness: Harness's latest
/// supported version, unless the committed one is newer (never downgrade), or is what Harness
/// names and that version already failed here. `Err`: why no version can be chosen.
pub fn choose(
    latest: Result<&LatestSupported, &HarnessError>,
    committed: Option<&Follow>,
    failed: Option<&str>,
    repository: &str,
    minimal: bool,
) -> Result<Chosen, String> {
    // The committed image counts only when it came from the same repository and variant.
    let kept = committed
        .filter(|f| f.repository == repository && f.minimal == minimal)
        .and_then(|f| Some((f.image.clone(), f.running()?)));
    // Whatever Harness's failure (a revoked key too), a delegate with an image keeps it: a stack
    // Update, or CloudFormation's rollback of one, must not fail on Harness.
    let latest = match (latest, kept) {
        (Ok(l), kept) => (l, kept),
        (Err(e), Some((image, _))) => {
            return Ok(Chosen {
                image,
                why: format!("{e}: the committed image is kept"),
            })
        }
        (Err(e), None) => return Err(format!("{e}: the delegate's version cannot be chosen without Harness's latest supported version: correct what was refused, or pin Image")),
    };
    let (latest, kept) = latest;
    let (image, version) = image_in(repository, minimal, latest);
    match kept {
        Some((kept_image, running)) if running.cmp_build(&version) != Ordering::Less => Ok(Chosen {
            image: kept_image,
            why: format!("the committed {running} is not older than Harness's latest supported {version}: kept"),
        }),
        Some((kept_image, running)) if failed == Some(version.to_string().as_str()) => Ok(Chosen {
            image: kept_image,
            why: format!("Harness's latest supported {version} did not become ready here before: {running} is kept until Harness publishes a newer one"),
        }),
        _ => Ok(Chosen {
            image,
            why: format!("Harness's latest supported version is {version}"),
        }),
    }
}

/// The image a request installs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub image: String,
    pub why: String,
}

/// What an upgrade run does with one delegate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Running the latest supported version, or a newer one.
    UpToDate,
    /// Move to this image (of this version).
    Upgrade { image: String, to: DelegateVersion },
    /// Nothing is done, for this reason.
    Skip(String),
    /// Behind, and pinned (`ImageUpgrade: Off`): reported with a WARN.
    Behind,
}

/// The decision for a delegate that follows `f`, given Harness's answer and the version that
/// failed here before.
pub fn decide(
    f: &Follow,
    latest: Result<&LatestSupported, &HarnessError>,
    failed: Option<&str>,
) -> Decision {
    let latest = match latest {
        Ok(l) => l,
        Err(e) => {
            return Decision::Skip(format!(
                "{e}: nothing was changed; the next schedule asks again"
            ))
        }
    };
    let Some(running) = f.running() else {
        return Decision::Skip(format!(
            "the image {} has no version tag to compare with Harness's (yy.mm.build)",
            f.image
        ));
    };
    let (image, to) = f.image_of(latest);
    if running.cmp_build(&to) != Ordering::Less {
        return Decision::UpToDate;
    }
    match f.upgrade {
        ImageUpgrade::Off => Decision::Behind,
        ImageUpgrade::LatestSupported if failed == Some(to.to_string().as_str()) => {
            Decision::Skip(format!(
                "{to} did not become ready here before and was rolled back: it is not tried again until Harness publishes a newer version"
            ))
        }
        ImageUpgrade::LatestSupported => Decision::Upgrade { image, to },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(v: &str) -> LatestSupported {
        LatestSupported {
            version: DelegateVersion::parse(v).unwrap(),
            minimal: DelegateVersion::parse(&format!("{v}.minimal")).unwrap(),
        }
    }

    fn follow(image: &str, upgrade: ImageUpgrade) -> Follow {
        Follow {
            upgrade,
            api_key_secret: "arn:aws:secretsmanager:eu-west-1:1:secret:k".into(),
            manager: "https://app.harness.io".into(),
            account_id: "acct".into(),
            repository: DEFAULT_REPOSITORY.into(),
            minimal: image.ends_with(".minimal"),
            image: image.into(),
        }
    }

    fn problems(props: ImageProperties) -> (ImageUpgrade, Vec<String>) {
        let mut p = vec![];
        let (mode, _) = check(&props, &mut p);
        (
            mode,
            p.into_iter().map(|(k, m)| format!("{k}: {m}")).collect(),
        )
    }

    const KEY: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:harness-api-key";

    #[test]
    fn the_image_properties_rules() {
        let key = || Some(KEY.to_string());
        let image = || Some("harness/delegate:25.10.87100".to_string());
        let rows: Vec<(&str, ImageProperties, ImageUpgrade, &[&str])> = vec![
            ("nothing: the latest tag, no upgrades", ImageProperties::default(), ImageUpgrade::Off, &[]),
            ("a key alone follows Harness", ImageProperties { api_key_secret: key(), ..Default::default() }, ImageUpgrade::LatestSupported, &[]),
            ("a key with a pinned image keeps the pin (and warns when behind)", ImageProperties { api_key_secret: key(), image: image(), ..Default::default() }, ImageUpgrade::Off, &[]),
            ("a pin and LatestSupported contradict: both named", ImageProperties { api_key_secret: key(), image: image(), upgrade: Some(ImageUpgrade::LatestSupported), ..Default::default() }, ImageUpgrade::LatestSupported, &["ImageUpgrade: LatestSupported follows Harness's versions, but Image pins harness/delegate:25.10.87100"]),
            ("LatestSupported needs a key", ImageProperties { upgrade: Some(ImageUpgrade::LatestSupported), ..Default::default() }, ImageUpgrade::LatestSupported, &["HarnessApiKeySecretArn: is required with ImageUpgrade LatestSupported"]),
            ("a repository with a pin", ImageProperties { image: image(), repository: Some("mirror/delegate".into()), ..Default::default() }, ImageUpgrade::Off, &["ImageRepository: ImageRepository applies to the image the function chooses, but Image pins"]),
            ("minimal with a pin", ImageProperties { image: image(), minimal: Some(true), ..Default::default() }, ImageUpgrade::Off, &["MinimalImage: MinimalImage applies"]),
            ("minimal without a key or pin", ImageProperties { minimal: Some(true), ..Default::default() }, ImageUpgrade::Off, &["MinimalImage: the minimal image has no \"latest\" tag"]),
            ("a repository with a tag", ImageProperties { api_key_secret: key(), repository: Some("harness/delegate:1".into()), ..Default::default() }, ImageUpgrade::LatestSupported, &["ImageRepository: \"harness/delegate:1\" must name a repository in lower case without a tag"]),
            ("a private registry with a port", ImageProperties { api_key_secret: key(), repository: Some("registry.example.com:5000/harness/delegate".into()), ..Default::default() }, ImageUpgrade::LatestSupported, &[]),
            ("a key that is not a secret's ARN", ImageProperties { api_key_secret: Some("pat.abc.def".into()), ..Default::default() }, ImageUpgrade::LatestSupported, &["HarnessApiKeySecretArn: must be a Secrets Manager secret ARN"]),
            ("a wildcard or a host in the ARN", ImageProperties { api_key_secret: Some("arn:aws:secretsmanager:evil.example#:123456789012:secret:*".into()), ..Default::default() }, ImageUpgrade::LatestSupported, &["HarnessApiKeySecretArn: must be a Secrets Manager secret ARN"]),
            ("an upper-case repository", ImageProperties { api_key_secret: key(), repository: Some("Harness/Delegate".into()), ..Default::default() }, ImageUpgrade::LatestSupported, &["ImageRepository: \"Harness/Delegate\" must name a repository in lower case"]),
        ];
        for (why, props, mode, expected) in rows {
            let (got_mode, got) = problems(props);
            assert_eq!(got_mode, mode, "{why}");
            assert_eq!(got.len(), expected.len(), "{why}: {got:?}");
            for (g, e) in got.iter().zip(expected) {
                assert!(g.starts_with(e), "{why}: {g}");
            }
        }
    }

    type Answer<'a> = Result<&'a LatestSupported, &'a HarnessError>;

    #[test]
    fn what_a_create_or_update_installs() {
        let new = latest("25.11.87300");
        let down = HarnessError::Unavailable("HTTP 500".into());
        let denied = HarnessError::Unauthorized {
            status: 403,
            account: "acct".into(),
        };
        let on = |image: &str| follow(image, ImageUpgrade::LatestSupported);
        type Row<'a> = (
            &'a str,
            Answer<'a>,
            Option<Follow>,
            Option<&'a str>,
            bool,
            Result<&'a str, &'a str>,
        );
        let rows: Vec<Row> = vec![
            (
                "a new delegate gets Harness's latest",
                Ok(&new),
                None,
                None,
                false,
                Ok("harness/delegate:25.11.87300"),
            ),
            (
                "the minimal variant",
                Ok(&new),
                None,
                None,
                true,
                Ok("harness/delegate:25.11.87300.minimal"),
            ),
            (
                "an older committed image is moved up",
                Ok(&new),
                Some(on("harness/delegate:25.10.87100")),
                None,
                false,
                Ok("harness/delegate:25.11.87300"),
            ),
            (
                "a newer committed image is never downgraded",
                Ok(&new),
                Some(on("harness/delegate:25.12.87500")),
                None,
                false,
                Ok("harness/delegate:25.12.87500"),
            ),
            (
                "a version that failed here is not installed again",
                Ok(&new),
                Some(on("harness/delegate:25.10.87100")),
                Some("25.11.87300"),
                false,
                Ok("harness/delegate:25.10.87100"),
            ),
            (
                "another variant's image is not kept",
                Ok(&new),
                Some(on("harness/delegate:25.12.87500")),
                None,
                true,
                Ok("harness/delegate:25.11.87300.minimal"),
            ),
            (
                "Harness down: the committed image is kept",
                Err(&down),
                Some(on("harness/delegate:25.10.87100")),
                None,
                false,
                Ok("harness/delegate:25.10.87100"),
            ),
            (
                "Harness down and nothing committed: no version",
                Err(&down),
                None,
                None,
                false,
                Err("Harness did not answer"),
            ),
            (
                "a refused key keeps the committed image (an Update's rollback must not fail on Harness)",
                Err(&denied),
                Some(on("harness/delegate:25.10.87100")),
                None,
                false,
                Ok("harness/delegate:25.10.87100"),
            ),
            (
                "a refused key fails a new delegate, with the reason",
                Err(&denied),
                None,
                None,
                false,
                Err("Harness refused the API key (HTTP 403)"),
            ),
        ];
        for (why, answer, committed, failed, minimal, expected) in rows {
            let got = choose(
                answer,
                committed.as_ref(),
                failed,
                DEFAULT_REPOSITORY,
                minimal,
            );
            match (got, expected) {
                (Ok(c), Ok(image)) => assert_eq!(c.image, image, "{why}: {}", c.why),
                (Err(e), Err(says)) => assert!(e.starts_with(says), "{why}: {e}"),
                (got, _) => panic!("{why}: {got:?}"),
            }
        }
    }

    #[test]
    fn what_an_upgrade_run_does() {
        let new = latest("25.11.87300");
        let down = HarnessError::Unavailable("timed out".into());
        let rows: Vec<(&str, Follow, Answer, Option<&str>, Decision)> = vec![
            ("older: upgraded", follow("harness/delegate:25.10.87100", ImageUpgrade::LatestSupported), Ok(&new), None, Decision::Upgrade { image: "harness/delegate:25.11.87300".into(), to: new.version.clone() }),
            ("older minimal: the minimal version", follow("harness/delegate:25.10.87100.minimal", ImageUpgrade::LatestSupported), Ok(&new), None, Decision::Upgrade { image: "harness/delegate:25.11.87300.minimal".into(), to: new.minimal.clone() }),
            ("the same version: up to date", follow("harness/delegate:25.11.87300", ImageUpgrade::LatestSupported), Ok(&new), None, Decision::UpToDate),
            ("newer than Harness's: never downgraded", follow("harness/delegate:25.12.1", ImageUpgrade::LatestSupported), Ok(&new), None, Decision::UpToDate),
            ("pinned and behind: a warning", follow("harness/delegate:25.10.87100", ImageUpgrade::Off), Ok(&new), None, Decision::Behind),
            ("pinned and current", follow("harness/delegate:25.11.87300", ImageUpgrade::Off), Ok(&new), None, Decision::UpToDate),
            ("the version failed here before", follow("harness/delegate:25.10.87100", ImageUpgrade::LatestSupported), Ok(&new), Some("25.11.87300"), Decision::Skip("25.11.87300 did not become ready here before and was rolled back: it is not tried again until Harness publishes a newer version".into())),
            ("an older failure does not hold back a newer version", follow("harness/delegate:25.10.87100", ImageUpgrade::LatestSupported), Ok(&new), Some("25.10.87200"), Decision::Upgrade { image: "harness/delegate:25.11.87300".into(), to: new.version.clone() }),
            ("Harness down: skipped, nothing changed", follow("harness/delegate:25.10.87100", ImageUpgrade::LatestSupported), Err(&down), None, Decision::Skip("Harness did not answer (timed out): nothing was changed; the next schedule asks again".into())),
            ("no version in the tag", follow("harness/delegate:latest", ImageUpgrade::LatestSupported), Ok(&new), None, Decision::Skip("the image harness/delegate:latest has no version tag to compare with Harness's (yy.mm.build)".into())),
        ];
        for (why, f, answer, failed, expected) in rows {
            assert_eq!(decide(&f, answer, failed), expected, "{why}");
        }
    }
}
