//! The pull policy: make sure an image is on this host before a container
//! is created from it.

use bollard::Docker;
use bollard::errors::Error;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::spec::PullPolicy;

/// Makes `image` available according to `policy`. `what` names the image's
/// role in messages ("image", "service `db`: image").
pub(crate) async fn ensure(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
    what: &str,
) -> Result<(), String> {
    let present = match docker.inspect_image(image).await {
        Ok(_) => true,
        Err(Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(error) => return Err(format!("cannot inspect {what} `{image}`: {error}")),
    };
    match (policy, present) {
        (PullPolicy::Never, true) | (PullPolicy::IfMissing, true) => Ok(()),
        (PullPolicy::Never, false) => Err(format!(
            "{what} `{image}` is not on this host and the task says `pull: never`; load it \
             with `docker load` (or build it) on this host, or use `pull: if-missing`"
        )),
        (PullPolicy::Always | PullPolicy::IfMissing, _) => {
            pull(docker, image).await.map_err(|error| {
                let hint = if present {
                    "check the name and that this host reaches its registry, or use \
                     `pull: if-missing` to run the copy this host already has"
                } else {
                    "it is not on this host either: check the name and that this host \
                     reaches its registry, or load it with `docker load` and use \
                     `pull: never`"
                };
                format!(
                    "cannot pull {what} `{image}` (`pull: {}`): {error}; {hint}",
                    policy.as_str()
                )
            })
        }
    }
}

async fn pull(docker: &Docker, image: &str) -> Result<(), Error> {
    let (name, tag) = split_reference(image);
    let options = CreateImageOptionsBuilder::new()
        .from_image(name)
        .tag(tag)
        .build();
    let mut progress = docker.create_image(Some(options), None, None);
    while let Some(event) = progress.next().await {
        let event = event?;
        if let Some(message) = event.error_detail.and_then(|detail| detail.message) {
            return Err(Error::DockerStreamError { error: message });
        }
    }
    Ok(())
}

/// `(name, tag or digest)`. An empty tag would make the engine pull every
/// tag of the repository, so a reference without one means `latest`, as on
/// the command line.
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    // A `:` before the last `/` belongs to a registry's port.
    let last_part = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[last_part..].rfind(':') {
        Some(colon) => (&image[..last_part + colon], &image[last_part + colon + 1..]),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references() {
        assert_eq!(split_reference("alpine"), ("alpine", "latest"));
        assert_eq!(split_reference("alpine:3.20"), ("alpine", "3.20"));
        assert_eq!(
            split_reference("reg.example:5000/team/app"),
            ("reg.example:5000/team/app", "latest")
        );
        assert_eq!(
            split_reference("reg.example:5000/app:1"),
            ("reg.example:5000/app", "1")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }
}
